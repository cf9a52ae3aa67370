//! The balancer on the HTTP front end (`http/`): what a request meets between the client's
//! connection and a backend, read top to bottom.
//!
//! ```text
//! poller thread   Balancing::admit   admission.rs (CONNECT, targets, Host)      → 405 / 400
//!                                    filter/ (allow/deny, bans, rules, rate)    → 403 / 405 / 413 / 414 / 429
//!                                    a shared limit: parked, asked of Redis, then
//!                 Balancing::resume  filter/ decides with Redis's answer         → 403 / 429 / 503
//! worker          Balancing::handle  an upgrade (WebSocket)? reserve a tunnel         → 503
//!                                    proxy.forward: pick a backend, send, retry when safe
//!                                    relay the answer (streamed), or our own 502 / 503 / 504,
//!                                    or a 101: hand both sockets to the poller as a tunnel
//!                                    metrics, access log (a tunnel's when it ends)
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
use crate::admission::check_request;
use crate::balance::backend::{Backend, InFlight};
use crate::explain::{self, Decisions, Explanation, FilterVerdict};
use crate::filter::shared::Answer;
use crate::filter::{Checked, Filter, LimitSource};
use crate::http::{
    Admission, Defer, Exchange, Framing, Handler, Note, Refusal, Refused, Request, RequestHead,
    TunnelEnded,
};
use crate::logging::{AccessEntry, AccessLog, RequestLine, TunnelTotals};
use crate::metrics::{tunnel_end_label, Metrics, Rejection};
use crate::proxy::{Failed, Forwarded, Proxy, ResponseHeaders, Upgraded};
use crate::Shared;

/// The balancer's request handler (see the module documentation).
pub struct Balancing {
    /// The forwarding engine.
    pub proxy: Arc<Proxy>,
    /// Request filtering, applied on admission.
    pub filter: Arc<Filter>,
    /// Balancer-wide counters.
    pub metrics: Arc<Metrics>,
    /// The access log (a line per request, unless off).
    pub access_log: Arc<AccessLog>,
    /// Whether to explain decisions (`explain on`).
    pub explain: Arc<AtomicBool>,
    /// Where explained decisions are kept for the dashboard.
    pub decisions: Arc<Decisions>,
}

impl Handler for Balancing {
    fn admit(&self, head: &RequestHead, framing: Framing, defer: &Defer<'_>) -> Admission {
        if let Err(refusal) = check_request(head) {
            self.metrics.record_rejection(Rejection::BadRequest);
            return Admission::Refuse(self.explained(head, refusal, None, None));
        }
        match self.filter.check(head, framing, Instant::now()) {
            Checked::Done { verdict, limit } => self.filtered(head, framing, verdict, limit).into(),
            // A shared limit: Redis's answer comes through `resume`.
            Checked::Ask(ask) => {
                self.filter.ask(ask, defer.handle());
                let within = self.filter.shared_within();
                Admission::Later { within }
            }
        }
    }

    fn resume(
        &self,
        head: &RequestHead,
        framing: Framing,
        note: Option<Note>,
    ) -> Result<(), Refusal> {
        let answer = note.and_then(|n| n.downcast::<Answer>().ok()).map(|a| *a);
        let (verdict, limit) = self.filter.settle(head, answer, Instant::now());
        self.filtered(head, framing, verdict, limit)
    }

    fn max_body(&self) -> Option<u64> {
        self.filter.max_body()
    }

    fn refused(
        &self,
        peer: SocketAddr,
        head: Option<&RequestHead>,
        refusal: &Refusal,
        why: Refused,
        waited: Duration,
    ) {
        let gone = why == Refused::ClientGone;
        if !gone {
            self.metrics.record_response(refusal.status, waited);
        }
        let rejection = match why {
            Refused::Malformed => Some(Rejection::BadRequest),
            Refused::HeadTimeout => Some(Rejection::HeadTimeout),
            Refused::QueueFull => Some(Rejection::QueueFull),
            Refused::QueueTimeout => Some(Rejection::QueueTimeout),
            Refused::ShuttingDown => Some(Rejection::ShuttingDown),
            Refused::BodyTimeout => Some(Rejection::BodyTimeout),
            Refused::NoBufferRoom => Some(Rejection::BufferFull),
            Refused::BodyTooLarge => {
                self.filter.note_body_too_large();
                None
            }
            // Counted where it was decided: in `admit` or by the filter.
            Refused::Admission => None,
            // Nothing was answered: only the access log hears of it.
            Refused::ClientGone => None,
        };
        if let Some(r) = rejection {
            self.metrics.record_rejection(r);
        }
        // Like nginx, a request refused before its head was read is logged with `-`.
        self.access_log.write(&AccessEntry {
            client: head.map_or(peer.ip(), |h| h.client),
            request: head.map(request_line),
            status: refusal.status,
            backend: None,
            duration: waited,
            bytes: if gone {
                0
            } else {
                refusal.reason.len() as u64 + 1
            },
            attempts: 0,
            via: "",
            reason: Some(refusal.code),
            aborted: gone,
            tunnel: None,
        });
    }

    fn handle(&self, request: &Request, exchange: &mut Exchange<'_>) {
        let head = &request.head;
        // An upgrade to an allowed protocol (a WebSocket) may become a tunnel; for any other
        // request this is one look for an `Upgrade` header.
        let upgrade = self.proxy.upgrade_of(head, request.framing);
        // With `explain on` every request is explained, for the dashboard; only a client that
        // asked gets the line. With it off, nothing is traced.
        let mut explanation = self.explain.load(Relaxed).then(|| Explanation {
            filter: self.filter_verdict(),
            limit: self.filter.limit_of(head).map(LimitSource::name),
            ..Explanation::default()
        });
        let reserved = match upgrade {
            // Before any backend is asked: an upgrade past the limit costs no connection.
            Some(_) => exchange.reserve_tunnel(),
            None => Ok(()),
        };
        let result = match reserved {
            Ok(()) => self.forward(request, exchange, upgrade.as_deref(), explanation.as_mut()),
            Err(refusal) => Err(not_forwarded(refusal, explanation.as_mut())),
        };
        let mut explained = explanation.map(|e| e.line());
        let asked = explained.is_some() && explain::asked(head);
        let (line, via, tunnel) = match result {
            Ok(fwd) => self.answer(request, exchange, fwd, explained.as_mut(), asked),
            Err(failed) => self.fail(exchange, failed, explained.as_ref(), asked),
        };
        self.metrics
            .record_response(line.status, request.received.elapsed());
        // Kept once the answer is on its way, with the status the client got.
        if let Some(explained) = explained {
            self.decisions.record(head, line.status, explained);
        }
        // A tunnel's line is written when it ends.
        if tunnel || !self.access_log.enabled() {
            return;
        }
        let untaken = exchange.untaken();
        if untaken == 0 {
            return line.log(&self.access_log, head, &via, request.received.elapsed());
        }
        // The client has not taken all of the answer: the line is written when it has, or has
        // left, so that it tells how much it took.
        let (head, received) = (head.clone(), request.received);
        let access_log = Arc::clone(&self.access_log);
        exchange.when_delivered(Box::new(move |delivered| {
            let line = Line {
                bytes: line.bytes.saturating_sub(delivered.untaken),
                aborted: line.aborted || !delivered.complete,
                ..line
            };
            line.log(&access_log, &head, &via, received.elapsed());
        }));
    }
}

impl Balancing {
    /// Forwards `request` (as an upgrade to `upgrade` when given), explained into `explanation`
    /// when `explain` is on.
    fn forward(
        &self,
        request: &Request,
        exchange: &mut Exchange<'_>,
        upgrade: Option<&[u8]>,
        explanation: Option<&mut Explanation>,
    ) -> Result<Forwarded, Failed> {
        let (head, framing) = (&request.head, request.framing);
        let max_body = self.filter.max_body();
        let body = &mut exchange.body();
        match explanation {
            Some(e) => self
                .proxy
                .forward_explained(head, framing, body, max_body, upgrade, e),
            None => self.proxy.forward(head, framing, body, max_body, upgrade),
        }
    }

    /// Relays a backend's answer, or turns its 101 into a tunnel. Returns the access-log line,
    /// the backends tried, and whether a tunnel was opened (its line is written at its end).
    fn answer(
        &self,
        request: &Request,
        exchange: &mut Exchange<'_>,
        mut fwd: Forwarded,
        explained: Option<&mut String>,
        asked: bool,
    ) -> (Line, String, bool) {
        self.metrics.record_retries(fwd.attempts.saturating_sub(1));
        let backend = Some(Arc::clone(fwd.backend()));
        let (attempts, via) = (fwd.attempts, names(&fwd.via));
        let (relayed, tunnel) = match fwd.upgraded.take() {
            Some(upgraded) => {
                let explained = explained.map(|l| (&**l, asked));
                let relayed = self.tunnel(request, exchange, fwd, *upgraded, explained, &via);
                (relayed, true)
            }
            None => (relay(exchange, fwd, explained, asked), false),
        };
        let line = Line {
            status: relayed.status,
            backend,
            bytes: relayed.bytes,
            attempts,
            reason: relayed.reason,
            aborted: relayed.aborted,
        };
        (line, via, tunnel)
    }

    /// Answers our own refusal for a request that was not forwarded, or not answered.
    fn fail(
        &self,
        exchange: &mut Exchange<'_>,
        mut failed: Failed,
        explained: Option<&String>,
        asked: bool,
    ) -> (Line, String, bool) {
        self.metrics
            .record_retries(failed.attempts.saturating_sub(1));
        if failed.attempts == 0 {
            self.metrics.record_rejection(match failed.refusal.code {
                "tunnel_limit" => Rejection::TunnelLimit,
                "shutting_down" => Rejection::ShuttingDown,
                _ => Rejection::NoBackend,
            });
        }
        // Only a streamed body (`request_buffering off`) is cut off here; a buffered one was
        // refused on the poller and counted there.
        if failed.refusal.code == "body_too_large" {
            self.filter.note_body_too_large();
        }
        if asked {
            failed.refusal.header = explained.cloned().map(|l| Box::new((explain::HEADER, l)));
        }
        exchange.refuse(&failed.refusal);
        let line = Line {
            status: failed.refusal.status,
            backend: failed.backend,
            bytes: failed.refusal.reason.len() as u64 + 1,
            attempts: failed.attempts,
            reason: Some(failed.refusal.code),
            aborted: false,
        };
        (line, names(&failed.via), false)
    }

    /// Answers the backend's 101 to the client and hands both sockets to the poller as a
    /// tunnel: from here on no worker is involved. The tunnel counts against its backend (on
    /// `/status`) until it ends, when its access-log line is written. `explained` is the
    /// request's explanation when `explain` is on, and whether the client asked for it.
    fn tunnel(
        &self,
        request: &Request,
        exchange: &mut Exchange<'_>,
        fwd: Forwarded,
        upgraded: Upgraded,
        explained: Option<(&str, bool)>,
        via: &str,
    ) -> Relayed {
        let backend = Arc::clone(fwd.backend());
        backend.stats.tunnels.fetch_add(1, Relaxed);
        let ended = TunnelLine {
            head: request.head.clone(),
            backend,
            attempts: fwd.attempts,
            via: via.to_string(),
            received: request.received,
            access_log: Arc::clone(&self.access_log),
        };
        let Upgraded {
            stream,
            leftover,
            protocol,
        } = upgraded;
        let headers = passed_on(&fwd.headers, explained);
        let on_end = Box::new(move |end: TunnelEnded| ended.ended(end));
        let switched = exchange.switch_protocols(&protocol, headers, stream, &leftover, on_end);
        Relayed {
            status: 101,
            bytes: 0,
            reason: None,
            aborted: switched.is_err(),
        }
    }

    /// The rest of admission once the filter has decided (`limit`: which limit decided, for a
    /// shared rule): an upload that no backend could take is refused now.
    fn filtered(
        &self,
        head: &RequestHead,
        framing: Framing,
        verdict: Result<(), Refusal>,
        limit: Option<LimitSource>,
    ) -> Result<(), Refusal> {
        if let Err(refusal) = verdict {
            let filter = Some(FilterVerdict::Refused);
            return Err(self.explained(head, refusal, filter, limit));
        }
        if framing != Framing::None && !self.proxy.pool().any_available() {
            // Before the body is read, and before `100 Continue`: an upload no backend could
            // take is refused before the client sends it.
            self.metrics.record_rejection(Rejection::NoBackend);
            let refusal = Refusal::retry_after(503, "no backend available", 1);
            let verdict = self.filter_verdict();
            return Err(self.explained(head, refusal.coded("no_backend"), verdict, limit));
        }
        Ok(())
    }

    /// The filter's verdict on a request it let through: `pass` when it has rules to check.
    fn filter_verdict(&self) -> Option<FilterVerdict> {
        self.filter.is_active().then_some(FilterVerdict::Pass)
    }

    /// `refusal` of a request at admission, explained when `explain` is on: kept for the
    /// dashboard, and carried in the answer's header when the client asked.
    fn explained(
        &self,
        head: &RequestHead,
        mut refusal: Refusal,
        filter: Option<FilterVerdict>,
        limit: Option<LimitSource>,
    ) -> Refusal {
        if self.explain.load(Relaxed) {
            let mut e = Explanation::refusal(filter, refusal.status, refusal.code);
            e.limit = limit.map(LimitSource::name);
            let line = e.line();
            if explain::asked(head) {
                refusal.header = Some(Box::new((explain::HEADER, line.clone())));
            }
            self.decisions.record(head, refusal.status, line);
        }
        refusal
    }
}

/// The backends tried, `a>b`, when there was more than one (else empty).
fn names(via: &[Arc<Backend>]) -> String {
    if via.len() < 2 {
        return String::new();
    }
    let names: Vec<&str> = via.iter().map(|b| b.name.as_str()).collect();
    names.join(">")
}

/// What the access log reads of a request's head.
fn request_line(head: &RequestHead) -> RequestLine<'_> {
    RequestLine {
        method: &head.method,
        target: &head.target,
        http10: head.http10,
        headers: &head.headers,
    }
}

/// What the access log says of one forwarded request, besides its head.
struct Line {
    status: u16,
    backend: Option<Arc<Backend>>,
    bytes: u64,
    attempts: u32,
    reason: Option<&'static str>,
    aborted: bool,
}

impl Line {
    fn log(&self, log: &AccessLog, head: &RequestHead, via: &str, duration: Duration) {
        log.write(&AccessEntry {
            client: head.client,
            request: Some(request_line(head)),
            status: self.status,
            backend: self.backend.as_ref().map(|b| b.name.as_str()),
            duration,
            bytes: self.bytes,
            attempts: self.attempts,
            via,
            reason: self.reason,
            aborted: self.aborted,
            tunnel: None,
        });
    }
}

/// A refusal given before any backend was asked (an upgrade past `limits tunnels=`, or during
/// the drain), as a failed forward of no attempt.
fn not_forwarded(refusal: Refusal, explanation: Option<&mut Explanation>) -> Failed {
    if let Some(e) = explanation {
        e.refused = Some((refusal.status, refusal.code));
    }
    Failed {
        refusal,
        backend: None,
        attempts: 0,
        via: Vec::new(),
        client_fault: false,
        body_read: 0,
        body_done: true,
    }
}

/// What a tunnel's access-log line says besides how it ended, kept until it ends (the callback
/// runs on the poller, or on the worker when the client left before the 101).
struct TunnelLine {
    head: RequestHead,
    backend: Arc<Backend>,
    attempts: u32,
    via: String,
    received: Instant,
    access_log: Arc<AccessLog>,
}

impl TunnelLine {
    /// The tunnel has ended: it stops counting against its backend, whose `bytes_out` gets
    /// what it sent, and its line is written.
    fn ended(self, end: TunnelEnded) {
        let stats = &self.backend.stats;
        stats.tunnels.fetch_sub(1, Relaxed);
        stats.bytes_out.fetch_add(end.down, Relaxed);
        if !self.access_log.enabled() {
            return;
        }
        self.access_log.write(&AccessEntry {
            client: self.head.client,
            request: Some(request_line(&self.head)),
            status: 101,
            backend: Some(&self.backend.name),
            duration: self.received.elapsed(),
            bytes: end.down,
            attempts: self.attempts,
            via: &self.via,
            reason: None,
            aborted: false,
            tunnel: Some(TunnelTotals {
                up: end.up,
                down: end.down,
                end: tunnel_end_label(end.how),
            }),
        });
    }
}

/// How relaying an answer went.
struct Relayed {
    status: u16,
    /// Body bytes written (into the socket, or into the connection's buffer).
    bytes: u64,
    /// Our own code when the balancer answered instead of the backend.
    reason: Option<&'static str>,
    /// The client left, or the backend's body broke off: the client has an incomplete answer.
    aborted: bool,
}

/// Sends the backend's answer to the client, streaming the body. A backend that fails before
/// the first byte of its body gets the client a 502 instead; one that fails later leaves the
/// client a cut-off answer on a closed connection, never one that looks complete.
///
/// `explained` is the request's explanation when `explain` is on: the answer then carries it
/// (instead of any header of that name from the backend) when the client `asked`, and a 502
/// instead of the backend's answer is added to it.
fn relay(
    exchange: &mut Exchange<'_>,
    fwd: Forwarded,
    explained: Option<&mut String>,
    asked: bool,
) -> Relayed {
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
    let relayed = |bytes, reason, aborted| Relayed {
        status,
        bytes,
        reason,
        aborted,
    };
    let headers = passed_on(&headers, explained.as_deref().map(|l| (&**l, asked)));
    match exchange.respond(status, headers, content_length, &mut source) {
        Ok(bytes) => relayed(bytes, None, false),
        Err(e) if e.source_failed && e.nothing_sent => {
            let backend = &source.in_flight.backend().name;
            log::warn!("backend {backend} failed before its body: {}", e.error);
            let mut refusal =
                Refusal::new(502, "backend failed before sending its body").coded("backend_failed");
            if let Some(line) = explained {
                explain::add_refusal(line, refusal.status, refusal.code);
                if asked {
                    refusal.header = Some(Box::new((explain::HEADER, line.clone())));
                }
            }
            exchange.refuse(&refusal);
            Relayed {
                status: 502,
                ..relayed(refusal.reason.len() as u64 + 1, Some(refusal.code), false)
            }
        }
        Err(e) if e.source_failed => {
            let backend = &source.in_flight.backend().name;
            log::warn!(
                "backend {backend} body failed after {} bytes: {}",
                e.bytes,
                e.error
            );
            relayed(e.bytes, Some("backend_failed"), true)
        }
        Err(e) => {
            log::debug!("the client left after {} bytes: {}", e.bytes, e.error);
            relayed(e.bytes, None, true)
        }
    }
}

/// The backend's headers the client gets: the end-to-end ones; with `explain` on (`explained`:
/// the line, and whether the client asked for it), not the backend's `X-Balancer-Explain` but
/// ours, when asked.
fn passed_on<'h>(
    headers: &'h ResponseHeaders,
    explained: Option<(&'h str, bool)>,
) -> impl Iterator<Item = (&'h str, &'h [u8])> {
    let header = explained.filter(|(_, asked)| *asked).map(|(line, _)| line);
    headers
        .end_to_end()
        .filter(move |(name, _)| {
            !(explained.is_some() && name.eq_ignore_ascii_case(explain::HEADER))
        })
        .chain(header.map(|line| (explain::HEADER, line.as_bytes())))
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

/// The admin listener's handler: the dashboard, `/status` and `/metrics` (see `admin/`).
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
            path: head.path().to_string(),
            query: head.query().unwrap_or_default().to_string(),
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
