//! loadbalancer: a synchronous HTTP/1.1 load balancer built from threads and channels, no async
//! runtime. This page is the table of contents.
//!
//! ```no_run
//! let config = loadbalancer::Config::default();
//! let running = loadbalancer::Balancer::start(config).expect("start");
//! println!("listening on {}", running.addr());
//! running.shutdown();
//! ```
//!
//! # One request, through the folders
//!
//! 1. [`http`] (the front end, a small HTTP/1.1 server that knows nothing of backends): the
//!    poller thread accepts the connection, reads the head and the body into a buffer, and asks
//!    the handler whether to admit it: [`admission`] (what is never forwarded) and [`filter`]
//!    (allow/deny, bans, request rules, rate limits), whose settings come from [`config`].
//! 2. A worker takes the complete request from the channel; [`server`] is the balancer's
//!    handler: [`proxy`] picks a backend through [`balance`] (smooth weighted round-robin over
//!    the backends the breaker and the health checks allow), forwards with ureq, retries when it
//!    is safe, and tells [`balance`] how the attempt went (latency, failures: the breaker and the
//!    dynamic weights learn from it).
//! 3. The answer goes back without the worker waiting on the client: what the client does not
//!    take at once waits in the connection's buffer, and the poller finishes it. [`metrics`]
//!    counts it, [`logging`] writes the access-log line.
//!    A WebSocket's `101 Switching Protocols` instead makes the connection a tunnel: the worker
//!    hands both sockets to the poller, which relays bytes both ways until both sides are done.
//!
//! With `explain on`, [`explain`] writes down why: the pick's scores, the weights and what was
//! skipped or retried, for a client that asks (`X-Balancer-Explain: 1`) and for the dashboard.
//!
//! Beside the request path: [`maintenance`] (the thread where time moves state: breaker
//! timeouts, health checks, weights, reload), [`admin`] (dashboard, `/status`, `/metrics`,
//! `/health`), [`supervise`] (what a panic does to each thread).
//!
//! # Folders and files, lowest first
//!
//! | module | what it is |
//! | --- | --- |
//! | [`clock`], [`decimal`], [`logging`], [`percent`], [`supervise`] | small tools every layer may use |
//! | [`http`] | the front end: poller, buffers (spools), workers, heads and framing; a library the rest builds on |
//! | [`config`] | the settings: words (durations, sizes), the file grammar with `file:line` errors, `--check`, the command line |
//! | [`admission`] | requests a load balancer never forwards |
//! | [`balance`] | backends and how one is chosen: selection (SWRR), breaker, health, weights, retry budget |
//! | [`filter`] | allow/deny, client address, path rules, rate limits (GCRA), bans, bounded tables |
//! | [`metrics`] | balancer-wide counters and the latency histogram |
//! | [`explain`] | explaining a decision: the `X-Balancer-Explain` line, the ring of recent decisions |
//! | [`proxy`] | forwarding one request: RFC 9110 header rules, the upstream (ureq), retries, error mapping |
//! | [`maintenance`] | the thread that moves time-driven state |
//! | [`state`] | what every part of a running balancer shares ([`Shared`]) |
//! | [`admin`], [`reload`] | the admin pages; applying a new configuration |
//! | [`server`] | the balancer's handler on the front end: admission, forwarding, relaying, access log |
//! | [`start`] | [`Balancer::start`]: everything wired together, and [`Running`] |
//! | [`startup`] | what the command says when it starts |
//!
//! Each module imports only modules above it in this table (`tests/layering.rs` checks that
//! there is no circle). Worked examples are in the module docs: `cargo doc --open`.

pub mod admin;
pub mod admission;
pub mod balance;
pub mod clock;
pub mod config;
pub mod decimal;
pub mod explain;
pub mod filter;
pub mod http;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod percent;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod start;
pub mod startup;
pub mod state;
pub mod supervise;

pub use config::Config;
pub use start::{Balancer, Running};
pub use state::{ConfigLoader, Shared};
