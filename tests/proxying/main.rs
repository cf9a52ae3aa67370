//! Proxying, one test binary: what a backend receives and what a client gets back (request and
//! response rules, the balancer's own errors, the response timeout, the weighted distribution,
//! explained decisions, WebSockets).
//! `cargo test --test proxying errors::` runs one module.

#[path = "../support/mod.rs"]
mod support;

mod distribution;
mod errors;
mod explain;
mod request_rules;
mod response_rules;
mod response_timeout;
mod websocket;
