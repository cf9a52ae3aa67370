//! Resilience, one test binary, measured with real backends: the circuit breaker and retries
//! (`breaker`), health checks, kill and restart, slow start (`health`), latency-driven weights
//! (`weights`), the retry budget under a kill and in an outage (`retry_budget`), and the demo
//! servers' `refuse` and `drop` switches through the balancer (`demo_switches`). Every test here
//! takes the [`support::serial`] lock: shares and timings are measured on 2 cores, so they run
//! one at a time.

#[path = "../support/mod.rs"]
mod support;

mod breaker;
// The demo servers come with the `demo` feature (on by default).
#[cfg(feature = "demo")]
mod demo_switches;
mod health;
mod retry_budget;
mod weights;

use loadbalancer::Config;
use support::{test_config, Backend};

/// Three named backends, `a`, `b` and `c`, and the test configuration over them at weight 1 each.
fn three_backends() -> ([Backend; 3], Config) {
    let nodes = [
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ];
    let config = test_config(&[(&nodes[0], 1), (&nodes[1], 1), (&nodes[2], 1)]);
    (nodes, config)
}
