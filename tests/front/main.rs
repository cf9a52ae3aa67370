//! The front end, one test binary: how the balancer reads requests and keeps connections (HTTP
//! conformance, head limits, timeouts, the queue, slow clients, streaming, load, descriptors,
//! tunnels)
//! and what its access log says. One module per area; `cargo test --test front limits::` runs
//! one of them.

#[path = "../support/mod.rs"]
mod support;

mod access_log;
mod client_timeout;
mod concurrency;
mod conformance;
mod deferred;
mod exchanges;
mod fuzz;
mod http;
mod leaks;
mod limits;
mod load;
mod queue;
mod slow_clients;
mod streaming;
mod tunnels;
