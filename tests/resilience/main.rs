//! Resilience, one test binary, measured with real backends: the circuit breaker and retries
//! (`breaker`), health checks, kill and restart, slow start (`health`), latency-driven weights
//! (`weights`). Every test here takes the [`support::serial`] lock: shares and timings are
//! measured on 2 cores, so they run one at a time.

#[path = "../support/mod.rs"]
mod support;

mod breaker;
mod health;
mod weights;
