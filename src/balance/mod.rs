//! Backends and how one is chosen.

pub mod backend;
pub mod breaker;
pub mod health;
pub mod retry;
pub mod selection;
pub mod weights;
