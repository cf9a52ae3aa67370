//! Request filtering, one test binary: rate limits, bans, allow and deny lists, body, method,
//! path and target limits, end to end.

#[path = "../support/mod.rs"]
mod support;

mod end_to_end;
mod shared;
