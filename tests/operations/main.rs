//! Operating the balancer, one test binary: the admin listener (`/status`, `/metrics`, tokens),
//! the command line, `--demo`, start-up messages, graceful shutdown, configuration reload, the
//! shape of the source itself (no import circle), and the docs against the code: every exercise of
//! docs/EXERCISES.md run as written, every sample log line of the README written by the code.
//! `cargo test --test operations reload::` runs one module.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod cli;
// `--demo` comes with the `demo` feature (on by default).
#[cfg(feature = "demo")]
mod demo;
// The exercises run the balancer with `--demo`.
#[cfg(feature = "demo")]
mod exercises;
mod layering;
mod log_samples;
mod reload;
mod shutdown;
mod startup;
