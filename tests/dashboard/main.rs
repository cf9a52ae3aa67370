//! The dashboard in a real browser (headless Chromium), one test binary.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod png;
