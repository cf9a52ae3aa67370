//! Operating the balancer, one test binary: the admin listener (`/status`, `/metrics`, tokens),
//! the command line, start-up messages, graceful shutdown, configuration reload, and the shape
//! of the source itself (no import circle).
//! `cargo test --test operations reload::` runs one module.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod cli;
mod layering;
mod reload;
mod shutdown;
mod startup;
