//! Operating the balancer, one test binary: the admin listener (`/status`, `/metrics`, tokens),
//! the command line, `--demo`, start-up messages, graceful shutdown, configuration reload, and
//! the shape of the source itself (no import circle).
//! `cargo test --test operations reload::` runs one module.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod cli;
// `--demo` comes with the `demo` feature (on by default).
#[cfg(feature = "demo")]
mod demo;
mod layering;
mod reload;
mod shutdown;
mod startup;
