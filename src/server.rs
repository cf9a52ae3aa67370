//! The balancer on the HTTP front end (`http/`): what a request meets between the client's
//! connection and a backend, read top to bottom.
//!
//! ```text
//! poller thread   Balancing::admit   proxy::check_request (CONNECT, targets)    → 405 / 400
//!                                    filter.rs (allow/deny, bans, rules, rate)  → 403 / 405 / 413 / 414 / 429
//! worker          Balancing::handle  proxy.forward: pick a backend, send, retry when safe
//!                                    relay the answer (streamed), or our own 502 / 503 / 504
//!                                    metrics, access log
//! ```
//!
//! The admission checks run on the poller thread, before a request takes a worker, so a flood of
//! refused requests costs no worker. The admin listener runs on a second front end of its own
//! with [`AdminPages`] as its handler.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admin::{self, AdminRequest, AdminResponse};
use crate::backend::InFlight;
use crate::filter::Filter;
use crate::http::{Exchange, Framing, Handler, Refusal, Refused, Request, RequestHead};
use crate::logging::{self, AccessEntry};
use crate::metrics::{Metrics, Rejection};
use crate::proxy::{check_request, Forwarded, Proxy};
use crate::Shared;

/// The balancer's request handler (see the module documentation).
pub struct Balancing {
    /// The forwarding engine.
    pub proxy: Arc<Proxy>,
    /// Request filtering, applied on admission.
    pub filter: Arc<Filter>,
    /// Balancer-wide counters.
    pub metrics: Arc<Metrics>,
    /// Whether to write an access-log line per request.
    pub access_log: Arc<AtomicBool>,
}

impl Handler for Balancing {
    fn admit(&self, head: &RequestHead, framing: Framing) -> Result<(), Refusal> {
        if let Err(refusal) = check_request(head) {
            self.metrics.record_rejection(Rejection::BadRequest);
            return Err(refusal);
        }
        self.filter.check(head, framing, Instant::now())
    }

    fn refused(
        &self,
        peer: SocketAddr,
        head: Option<&RequestHead>,
        refusal: &Refusal,
        why: Refused,
    ) {
        self.metrics.record_response(refusal.status, Duration::ZERO);
        let rejection = match why {
            Refused::Malformed => Some(Rejection::BadRequest),
            Refused::HeadTimeout => Some(Rejection::HeadTimeout),
            Refused::QueueFull => Some(Rejection::QueueFull),
            Refused::QueueTimeout => Some(Rejection::QueueTimeout),
            Refused::ShuttingDown => Some(Rejection::ShuttingDown),
            // Counted where it was decided: in `admit` or by the filter.
            Refused::Admission => None,
        };
        if let Some(r) = rejection {
            self.metrics.record_rejection(r);
        }
        if self.access_log.load(Relaxed) {
            // Like nginx, a request refused before its head was read is logged with `-`.
            logging::access(&AccessEntry {
                client: head.map_or(peer.ip(), |h| h.client),
                method: head.map_or("-", |h| &h.method),
                target: head.map_or("-", |h| &h.target),
                status: refusal.status,
                backend: "-",
                duration: Duration::ZERO,
                bytes: refusal.reason.len() as u64 + 1,
            });
        }
    }

    fn handle(&self, request: &Request, exchange: &mut Exchange<'_>) {
        let head = &request.head;
        let max_body = self.filter.max_body();
        let result = self
            .proxy
            .forward(head, request.framing, &mut exchange.body(), max_body);
        let (status, backend, bytes) = match result {
            Ok(fwd) => {
                self.metrics.record_retries(fwd.attempts.saturating_sub(1));
                let backend = fwd.backend().name.clone();
                let (status, bytes) = relay(exchange, fwd);
                (status, backend, bytes)
            }
            Err(failed) => {
                self.metrics
                    .record_retries(failed.attempts.saturating_sub(1));
                if failed.attempts == 0 {
                    self.metrics.record_rejection(Rejection::NoBackend);
                }
                if failed.refusal.status == 413 {
                    self.filter.note_body_too_large();
                }
                exchange.refuse(&failed.refusal);
                let backend = failed.backend.map_or("-".to_string(), |b| b.name.clone());
                let bytes = failed.refusal.reason.len() as u64 + 1;
                (failed.refusal.status, backend, bytes)
            }
        };
        self.metrics
            .record_response(status, request.received.elapsed());
        if self.access_log.load(Relaxed) {
            logging::access(&AccessEntry {
                client: head.client,
                method: &head.method,
                target: &head.target,
                status,
                backend: &backend,
                duration: request.received.elapsed(),
                bytes,
            });
        }
    }
}

/// Sends the backend's answer to the client, streaming the body. Returns the status sent and
/// the body bytes sent. A backend that fails before the first byte of its body gets the client
/// a 502 instead; one that fails later leaves the client a cut-off answer on a closed
/// connection, never one that looks complete.
fn relay(exchange: &mut Exchange<'_>, fwd: Forwarded) -> (u16, u64) {
    let Forwarded {
        status,
        headers,
        content_length,
        body,
        in_flight,
        ..
    } = fwd;
    let mut source = Counted {
        inner: body,
        in_flight,
    };
    match exchange.respond(status, headers.end_to_end(), content_length, &mut source) {
        Ok(bytes) => (status, bytes),
        Err(e) if e.source_failed && e.nothing_sent => {
            let backend = &source.in_flight.backend().name;
            log::warn!("backend {backend} failed before its body: {}", e.error);
            let refusal = Refusal::new(502, "backend failed before sending its body");
            exchange.refuse(&refusal);
            (502, 0)
        }
        Err(e) if e.source_failed => {
            let backend = &source.in_flight.backend().name;
            log::warn!(
                "backend {backend} body failed after {} bytes: {}",
                e.bytes,
                e.error
            );
            (status, e.bytes)
        }
        Err(e) => {
            log::debug!("the client left after {} bytes: {}", e.bytes, e.error);
            (status, e.bytes)
        }
    }
}

/// A backend's body, counted into its `bytes_out`; keeps the backend's in-flight gauge until
/// the body has been relayed.
struct Counted {
    inner: Box<dyn Read + Send>,
    in_flight: InFlight,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let stats = &self.in_flight.backend().stats;
        stats.bytes_out.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

/// The admin listener's handler: the dashboard, `/status` and `/metrics` (see `admin.rs`).
pub struct AdminPages {
    /// What the pages show.
    pub shared: Arc<Shared>,
}

/// Worker threads of the admin listener. 2.
pub const ADMIN_WORKERS: usize = 2;

impl Handler for AdminPages {
    fn handle(&self, request: &Request, exchange: &mut Exchange<'_>) {
        let head = &request.head;
        let req = AdminRequest {
            method: head.method.clone(),
            target: head.target.clone(),
            authorization: head.header("authorization").map(str::to_string),
        };
        let answer = catch_unwind(AssertUnwindSafe(|| admin::handle(&self.shared, &req)))
            .unwrap_or_else(|_| AdminResponse::text(500, "internal error"));
        let headers = [("Content-Type", answer.content_type)]
            .into_iter()
            .chain(answer.headers.iter().map(|(k, v)| (*k, v.as_str())))
            .map(|(k, v)| (k, v.as_bytes()));
        let length = Some(answer.body.len() as u64);
        if let Err(e) = exchange.respond(answer.status, headers, length, &mut &answer.body[..]) {
            log::debug!("admin answer not sent: {}", e.error);
        }
    }
}
