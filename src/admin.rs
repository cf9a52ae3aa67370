//! The admin listener's pages: a live dashboard (`/`), the same data as JSON (`/status`) and
//! Prometheus metrics (`/metrics`).
//!
//! STUB: the interface the rest of the balancer uses; the implementation is in progress.

use crate::Shared;

/// One admin request, as the front end hands it over.
#[derive(Clone, Debug, Default)]
pub struct AdminRequest {
    /// Method.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// The answer to an admin request.
#[derive(Clone, Debug)]
pub struct AdminResponse {
    /// Status.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl AdminResponse {
    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> AdminResponse {
        AdminResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: format!("{body}\n").into_bytes(),
        }
    }
}

/// Answers one admin request from the balancer's shared state.
pub fn handle(shared: &Shared, request: &AdminRequest) -> AdminResponse {
    let _ = (shared, request);
    AdminResponse::text(404, "not found")
}
