//! Forwarding one request: the HTTP rules a proxy must keep, retries, and error mapping.
//!
//! This file works on the front end's parsed request head ([`RequestHead`]) and plain
//! `std::io::Read` bodies, so its rules can be tested without sockets; `server.rs` connects it
//! to the front end (`http/`).
//!
//! What it guarantees (RFC 9110 / 9112):
//! - Transparency: method, request target (byte for byte), Host and end-to-end headers (values
//!   byte for byte, obs-text included), repeated headers, statuses and bodies pass through
//!   unchanged; redirects are not followed and bodies are not decompressed. An absolute-form
//!   target reaches this file already in origin form (`http::parse`); `OPTIONS *` is sent as is.
//! - Hop-by-hop headers (`Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`)
//!   are removed in both directions.
//! - `X-Forwarded-For` gets the client's address appended; `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are set.
//! - A request with both `Content-Length` and `Transfer-Encoding`, or a bad `Content-Length`, is
//!   refused with 400 and never forwarded (by the front end, `http::parse`).
//! - Retries go to a backend not yet tried: always when the request never reached a backend
//!   (connect failed), otherwise only for idempotent methods whose body was not read; at most
//!   `retries` extra attempts, and only while the [`RetryBudget`] allows.
//! - A backend that took the request and did not answer within the response timeout is not
//!   retried (unless [`ProxySettings::retry_timeouts`]): the response timeout is then the longest
//!   a client waits for the answer's head, as with HAProxy's `timeout server`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

/// Defined in `balance/` beside the backends whose state it feeds; re-exported here, where the
/// proxy calls it.
pub use crate::balance::Observer;

use crate::backend::{Backend, InFlight};
use crate::http::{Framing, Refusal, RequestHead};
use crate::pool::{Availability, Pool};
use crate::resolver::CachingResolver;
use crate::retry::RetryBudget;
use crate::transport::BackendConnector;

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Headers the balancer sets itself on the way to the backend.
const SET_BY_PROXY: &[&str] = &["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// True when `name` must not be forwarded, given the `Connection` header values of the message.
fn is_hop_by_hop<'a>(name: &str, connection: &mut impl Iterator<Item = &'a str>) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection.any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(name)))
}

/// Refuses what a load balancer does not forward: `CONNECT` (405); a target that is neither a
/// path nor `OPTIONS *` (400); a `Host` or `Authorization` value with bytes other than visible
/// ASCII, SP and HTAB (400). The front end has already checked the head's framing and `Host`,
/// and rewritten an absolute-form target to a path (see `http::parse`).
pub fn check_request(head: &RequestHead) -> Result<(), Refusal> {
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return Err(Refusal::new(405, "CONNECT is not supported"));
    }
    if head.target == "*" {
        // The asterisk form is for OPTIONS only (RFC 9112 §3.2.4).
        if head.method != "OPTIONS" {
            return Err(Refusal::new(400, "the target * is only for OPTIONS"));
        }
    } else if !head.target.starts_with('/') {
        return Err(Refusal::new(
            400,
            "request target must be a path or an http:// URL",
        ));
    }
    // obs-text passes through in other headers, but ureq sends a Host or an Authorization only
    // when it is text; a host name has no such bytes anyway (RFC 3986 §3.2.2).
    for name in ["host", "authorization"] {
        if !head.header_values(name).all(is_visible_ascii) {
            return Err(Refusal::new(
                400,
                format!("{name} header with bytes that are not ASCII"),
            ));
        }
    }
    Ok(())
}

/// True when `v` holds only visible ASCII, SP and HTAB: what a header value the HTTP library
/// reads as text may hold.
fn is_visible_ascii(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The headers to send to the backend: the client's, minus hop-by-hop ones and the ones the
/// proxy sets, plus `X-Forwarded-For` (the client's chain with `client` appended),
/// `X-Forwarded-Proto: http` and `X-Forwarded-Host` (the client's Host). `Expect` is dropped
/// because the front end has already answered it. The client's headers are borrowed from
/// `head`, not copied: the HTTP library copies them once into the request it sends.
pub fn backend_request_headers(head: &RequestHead, framing: Framing) -> Vec<HeaderPair<'_>> {
    // Bytes that are not UTF-8 become U+FFFD, which is in no header name: the tokens around
    // them still count.
    let connection: Vec<Cow<'_, str>> = head
        .header_values("connection")
        .map(String::from_utf8_lossy)
        .collect();
    let mut out: Vec<HeaderPair<'_>> = Vec::with_capacity(head.headers.len() + 4);
    for (name, value) in &head.headers {
        if is_hop_by_hop(name, &mut connection.iter().map(|c| c.as_ref()))
            || SET_BY_PROXY.iter().any(|h| name.eq_ignore_ascii_case(h))
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        out.push((name.into(), value.as_slice().into()));
    }
    if let Framing::Length(n) = framing {
        out.push(("Content-Length".into(), n.to_string().into_bytes().into()));
    }
    let mut xff: Vec<u8> = Vec::new();
    for entry in head.header_values("x-forwarded-for") {
        xff.extend_from_slice(entry);
        xff.extend_from_slice(b", ");
    }
    xff.extend_from_slice(head.client.to_string().as_bytes());
    out.push(("X-Forwarded-For".into(), xff.into()));
    out.push(("X-Forwarded-Proto".into(), b"http"[..].into()));
    if let Some(host) = head.header_bytes("host") {
        out.push(("X-Forwarded-Host".into(), host.into()));
    }
    out
}

/// A header name and value, borrowed where they come unchanged from the client. Values are
/// bytes: obs-text passes through as received.
pub type HeaderPair<'a> = (Cow<'a, str>, Cow<'a, [u8]>);

/// The backend's response headers, kept as the HTTP library parsed them (nothing is copied);
/// [`ResponseHeaders::end_to_end`] gives the ones the client should see.
pub struct ResponseHeaders {
    map: ureq::http::HeaderMap,
    /// The header names the backend's `Connection` headers list: hop-by-hop too.
    connection: Vec<String>,
}

impl ResponseHeaders {
    /// Wraps a backend's headers.
    pub fn new(map: ureq::http::HeaderMap) -> Self {
        let connection = map
            .get_all("connection")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        ResponseHeaders { map, connection }
    }

    /// The headers to pass on, repeated ones repeated: all but the hop-by-hop ones and
    /// `Content-Length`, which reaches the client through the front end's own framing.
    pub fn end_to_end(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .filter(|(k, _)| {
                *k != "content-length"
                    && !is_hop_by_hop(k, &mut self.connection.iter().map(String::as_str))
            })
    }

    /// All values of `name`, as received.
    fn values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.map.get_all(name).into_iter().map(|v| v.as_bytes())
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Forwarding settings (from [`crate::Config`]).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Backend connect timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Time for the response head, and between body reads. Default 30 s.
    pub response_timeout: Duration,
    /// Extra attempts on other backends. Default 2.
    pub retries: u32,
    /// Also retry (idempotent requests, body unread) after a backend timed out while it held the
    /// request. Default off: each retry would add a whole response timeout to the client's wait.
    pub retry_timeouts: bool,
    /// Statuses that count as backend failures. Default 502, 503, 504.
    pub failure_statuses: Vec<u16>,
    /// Idle keep-alive connections kept to each backend.
    pub idle_connections: usize,
    /// The largest request head a client may send (`limits max_head=`), so that the buffer a
    /// backend connection writes from can hold it with the forwarding headers. Default 16 KiB.
    pub max_request_head: usize,
}

/// A backend's answer, ready to be relayed. The body streams from the backend.
pub struct Forwarded {
    /// The backend's status.
    pub status: u16,
    /// The backend's headers; [`ResponseHeaders::end_to_end`] gives the ones to pass on.
    pub headers: ResponseHeaders,
    /// The body's length when the backend declared one.
    pub content_length: Option<u64>,
    /// The body.
    pub body: Box<dyn Read + Send>,
    /// Keeps the backend's in-flight gauge until the body has been relayed.
    pub in_flight: InFlight,
    /// Attempts made (1 when the first backend answered).
    pub attempts: u32,
    /// The backends tried, in order, the one that answered last, when there was more than one
    /// attempt (else empty).
    pub via: Vec<Arc<Backend>>,
}

impl Forwarded {
    /// The backend that answered.
    pub fn backend(&self) -> &Arc<Backend> {
        self.in_flight.backend()
    }
}

/// A failed forward: what to tell the client, and which backend failed last (if any).
#[derive(Debug)]
pub struct Failed {
    /// What the client gets.
    pub refusal: Refusal,
    /// The backend of the last attempt.
    pub backend: Option<Arc<Backend>>,
    /// Attempts made.
    pub attempts: u32,
    /// The backends tried, in order, when there was more than one attempt (else empty).
    pub via: Vec<Arc<Backend>>,
    /// The client's request body could not be read completely (the client is gone or lied).
    pub client_fault: bool,
    /// Request body bytes read from the client.
    pub body_read: u64,
    /// The request body was read to its end (or there was none).
    pub body_done: bool,
}

/// Reads the client's body for ureq while remembering whether anything was read and whether the
/// client failed, so that a client's error is never blamed on a backend.
struct ClientBody<'a> {
    inner: &'a mut dyn Read,
    read: u64,
    expected: Option<u64>,
    limit: Option<u64>,
    failed: bool,
    too_large: bool,
    done: bool,
}

impl Read for ClientBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.limit.is_some_and(|l| self.read > l) {
            self.too_large = true;
            return Err(io::Error::other("request body over the size limit"));
        }
        match self.inner.read(buf) {
            Ok(0) if self.expected.is_some_and(|e| self.read < e) && !buf.is_empty() => {
                self.failed = true;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed before sending the whole body",
                ))
            }
            Ok(n) => {
                self.read += n as u64;
                self.done |= n == 0 && !buf.is_empty();
                Ok(n)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

impl ClientBody<'_> {
    fn failure(
        &self,
        refusal: Refusal,
        backend: Option<Arc<Backend>>,
        attempts: u32,
        via: &mut Vec<Arc<Backend>>,
    ) -> Failed {
        let mut via = std::mem::take(via);
        if let Some(b) = backend.as_ref().filter(|_| !via.is_empty()) {
            if !via.last().is_some_and(|l| Arc::ptr_eq(l, b)) {
                via.push(Arc::clone(b));
            }
        }
        Failed {
            refusal,
            backend,
            attempts,
            via,
            client_fault: self.failed,
            body_read: self.read,
            body_done: self.done,
        }
    }
}

/// A backend's answer to one attempt.
struct Answer {
    status: u16,
    headers: ResponseHeaders,
    content_length: Option<u64>,
    body: Box<dyn Read + Send>,
}

/// How an attempt failed.
enum AttemptError {
    /// The request itself cannot be sent (a target or header the HTTP library refuses): the
    /// client's fault, not the backend's.
    Invalid(Refusal),
    /// The request never reached the backend (resolve or connect failed): safe to retry.
    NotSent(Refusal),
    /// The request may have reached the backend.
    Sent(Refusal),
    /// The request was sent and the backend did not answer in time: retried only when
    /// [`ProxySettings::retry_timeouts`] is on, as the time is already spent.
    TimedOut(Refusal),
}

/// Forwards requests over pooled ureq agents shared by all workers, one agent per backend.
pub struct Proxy {
    agents: RwLock<Agents>,
    pool: Arc<Pool>,
    availability: Arc<dyn Availability>,
    observer: Arc<dyn Observer>,
    budget: RetryBudget,
    settings: RwLock<ProxySettings>,
}

/// One ureq agent (and so one connection pool) per backend URL.
///
/// A single agent would do, but ureq's pool looks for a connection, and trims itself after each
/// request, by comparing every idle connection's host with each host it holds: with 3 backends
/// and 64 workers callgrind put 15 % of the balancer's instructions there. One pool per backend
/// holds one host.
struct Agents {
    /// What the agents were made for; a change makes new ones.
    made_for: (Duration, Duration, usize, usize),
    by_url: HashMap<String, ureq::Agent>,
}

fn agent_settings(settings: &ProxySettings) -> (Duration, Duration, usize, usize) {
    (
        settings.connect_timeout,
        settings.response_timeout,
        settings.idle_connections,
        settings.max_request_head,
    )
}

/// The transparent ureq agent for `settings`.
fn new_agent(settings: &ProxySettings) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(ureq::config::AutoHeaderValue::None)
        .accept(ureq::config::AutoHeaderValue::None)
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .allow_non_standard_methods(true)
        .timeout_connect(Some(settings.connect_timeout))
        .timeout_recv_response(Some(settings.response_timeout))
        .timeout_per_read(Some(settings.response_timeout))
        .max_idle_connections(settings.idle_connections)
        .max_idle_connections_per_host(settings.idle_connections)
        .max_idle_age(Duration::from_secs(15))
        .max_response_header_size(64 * 1024)
        // Each connection to a backend holds these two buffers, zeroed (so resident) once
        // used. ureq's defaults (128 KiB each) cost 256 KiB per pooled connection: with 64
        // workers that was 20 MiB of the balancer's memory. The input buffer must hold the
        // largest response head (64 KiB), the output buffer the largest request head with the
        // forwarding headers.
        .input_buffer_size(64 * 1024)
        .output_buffer_size((settings.max_request_head + 8 * 1024).max(32 * 1024))
        .build();
    ureq::Agent::with_parts(config, BackendConnector, CachingResolver::default())
}

impl Proxy {
    /// A proxy over `pool`. The ureq agent is configured to be transparent: no redirects, statuses
    /// are answers rather than errors, no automatic headers, no decompression.
    pub fn new(
        pool: Arc<Pool>,
        availability: Arc<dyn Availability>,
        observer: Arc<dyn Observer>,
        budget: RetryBudget,
        settings: ProxySettings,
    ) -> Proxy {
        Proxy {
            agents: RwLock::new(Agents {
                made_for: agent_settings(&settings),
                by_url: HashMap::new(),
            }),
            pool,
            availability,
            observer,
            budget,
            settings: RwLock::new(settings),
        }
    }

    /// Applies new settings (reload), after the pool got its new backends. New agents, with new
    /// connection pools, are made only when the timeouts or pool size changed; requests in flight
    /// finish on the old ones. Agents of backends no longer in the pool are dropped.
    pub fn reconfigure(&self, settings: ProxySettings, retry_budget_percent: u32) {
        let mut current = self.settings.write();
        {
            let mut agents = self.agents.write();
            let made_for = agent_settings(&settings);
            if agents.made_for != made_for {
                agents.made_for = made_for;
                agents.by_url.clear();
            }
            let urls: HashSet<String> =
                self.pool.backends().iter().map(|b| b.url.clone()).collect();
            agents.by_url.retain(|url, _| urls.contains(url));
        }
        *current = settings;
        self.budget.set_percent(retry_budget_percent);
    }

    /// The agent for the backend at `url`, made on first use.
    fn agent(&self, url: &str) -> ureq::Agent {
        if let Some(agent) = self.agents.read().by_url.get(url) {
            return agent.clone();
        }
        let settings = self.settings.read().clone();
        let mut agents = self.agents.write();
        if agents.made_for != agent_settings(&settings) {
            // A reload replaced the settings since we read them: use a one-off agent rather
            // than keep one made from the old settings.
            return new_agent(&settings);
        }
        agents
            .by_url
            .entry(url.to_string())
            .or_insert_with(|| new_agent(&settings))
            .clone()
    }

    /// The pool this proxy picks from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Forwards one request, retrying on other backends when that is safe. `framing` comes from
    /// [`check_request`]; `body` is the client's body stream; a body longer than `max_body` is
    /// cut off and answered with 413.
    pub fn forward(
        &self,
        head: &RequestHead,
        framing: Framing,
        body: &mut dyn Read,
        max_body: Option<u64>,
    ) -> Result<Forwarded, Failed> {
        self.budget.deposit();
        let headers = backend_request_headers(head, framing);
        let expected = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let mut body = ClientBody {
            inner: body,
            read: 0,
            expected,
            limit: max_body,
            failed: false,
            too_large: false,
            done: framing == Framing::None,
        };
        let mut tried: Vec<u64> = Vec::new();
        let mut via: Vec<Arc<Backend>> = Vec::new();
        let mut last: Option<(Refusal, Arc<Backend>)> = None;
        loop {
            let attempts = tried.len() as u32;
            let Some(backend) = self.pool.pick(&*self.availability, &tried) else {
                let (refusal, backend) = match last {
                    Some((refusal, backend)) => (refusal, Some(backend)),
                    None => {
                        let refusal = Refusal::retry_after(503, "no backend available", 1);
                        (refusal.coded("no_backend"), None)
                    }
                };
                return Err(body.failure(refusal, backend, attempts, &mut via));
            };
            tried.push(backend.id);
            let outcome = Outcome::pending(self, Arc::clone(&backend));
            let in_flight = backend.begin();
            let started = Instant::now();
            let result = self.attempt(&backend, head, framing, &headers, &mut body);
            let latency = started.elapsed();
            let error = match result {
                Ok(answer) => {
                    let ok = !self
                        .settings
                        .read()
                        .failure_statuses
                        .contains(&answer.status);
                    if !ok {
                        backend.stats.failures.fetch_add(1, Relaxed);
                    }
                    outcome.record(ok, latency);
                    if !via.is_empty() {
                        via.push(Arc::clone(&backend));
                    }
                    return Ok(Forwarded {
                        status: answer.status,
                        headers: answer.headers,
                        content_length: answer.content_length,
                        body: answer.body,
                        in_flight,
                        attempts: attempts + 1,
                        via,
                    });
                }
                Err(AttemptError::Invalid(refusal)) => {
                    // Nothing reached the backend and it is not to blame.
                    drop(in_flight);
                    return Err(body.failure(refusal, None, attempts + 1, &mut via));
                }
                Err(e) => e,
            };
            if body.too_large {
                let refusal = Refusal::new(413, "request body too large").coded("body_too_large");
                return Err(body.failure(refusal, Some(backend), attempts + 1, &mut via));
            }
            if body.failed {
                // The client broke off its own upload: not the backend's fault, and nothing
                // to retry with.
                let refusal = Refusal::new(400, "incomplete request body").coded("client_aborted");
                return Err(body.failure(refusal, Some(backend), attempts + 1, &mut via));
            }
            backend.stats.failures.fetch_add(1, Relaxed);
            outcome.record(false, latency);
            drop(in_flight);
            let (max_retries, retry_timeouts) = {
                let settings = self.settings.read();
                (settings.retries, settings.retry_timeouts)
            };
            let safe_to_resend = is_idempotent(&head.method) && body.read == 0;
            let (refusal, retryable) = match error {
                AttemptError::NotSent(r) => (r, true),
                AttemptError::Sent(r) => (r, safe_to_resend),
                AttemptError::TimedOut(r) => (r, retry_timeouts && safe_to_resend),
                AttemptError::Invalid(r) => (r, false),
            };
            log::debug!(
                "attempt {} to {} failed: {} {}",
                attempts + 1,
                backend.name,
                refusal.status,
                refusal.reason
            );
            let may_retry = retryable && attempts < max_retries && self.budget.withdraw();
            if !may_retry {
                return Err(body.failure(refusal, Some(backend), attempts + 1, &mut via));
            }
            // Only a retried request keeps the list, so that most requests allocate none.
            via.push(Arc::clone(&backend));
            last = Some((refusal, backend));
        }
    }

    fn attempt(
        &self,
        backend: &Backend,
        head: &RequestHead,
        framing: Framing,
        headers: &[HeaderPair<'_>],
        body: &mut ClientBody<'_>,
    ) -> Result<Answer, AttemptError> {
        let malformed = |_| AttemptError::Invalid(Refusal::new(400, "malformed request head"));
        let builder = ureq::http::Request::builder().method(head.method.as_str());
        let mut builder = if head.target == "*" {
            builder.uri(asterisk_uri(&backend.url).map_err(malformed)?)
        } else {
            // Given as a String, the URI is parsed in place rather than copied.
            builder.uri(format!("{}{}", backend.url, head.target))
        };
        for (name, value) in headers {
            builder = builder.header(name.as_ref(), value.as_ref());
        }
        let agent = self.agent(&backend.url);
        let response = match framing {
            Framing::None => agent.run(builder.body(ureq::SendBody::none()).map_err(malformed)?),
            Framing::Length(_) | Framing::Chunked => agent.run(
                builder
                    .body(ureq::SendBody::from_reader(body))
                    .map_err(malformed)?,
            ),
        }
        .map_err(classify)?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let headers = ResponseHeaders::new(parts.headers);
        let chunked = headers.values("transfer-encoding").next().is_some();
        let mut content_length = None;
        if !chunked {
            for v in headers.values("content-length") {
                let n = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        AttemptError::Sent(Refusal::new(502, "invalid Content-Length from backend"))
                    })?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(AttemptError::Sent(Refusal::new(
                        502,
                        "conflicting Content-Length from backend",
                    )));
                }
                content_length = Some(n);
            }
        }
        Ok(Answer {
            status,
            headers,
            content_length,
            body: Box::new(body.into_reader()),
        })
    }
}

/// One attempt's outcome, owed to the [`Observer`]. An attempt that ends without one (the
/// request was invalid, or its client broke off the upload: nothing says how the backend is)
/// gives back, when dropped, the half-open trial slot its pick took, so that a breaker can never
/// be left waiting for a trial that will not come.
struct Outcome<'p> {
    proxy: &'p Proxy,
    backend: Arc<Backend>,
    /// The pick took the backend's half-open trial slot.
    trial: bool,
    recorded: bool,
}

impl<'p> Outcome<'p> {
    fn pending(proxy: &'p Proxy, backend: Arc<Backend>) -> Outcome<'p> {
        Outcome {
            proxy,
            trial: backend.in_trial(),
            backend,
            recorded: false,
        }
    }

    fn record(mut self, success: bool, latency: Duration) {
        self.recorded = true;
        self.proxy.observer.record(&self.backend, success, latency);
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.trial {
            self.proxy.availability.release(&self.backend);
        }
    }
}

/// The URI for `OPTIONS *` to the backend at `url` (`http://host:port`). The http crate takes
/// `*` as a path, and ureq sends a URI's path and query as the request target: the asterisk
/// form goes out as the client sent it. (A string `http://host:port*` would not parse.)
fn asterisk_uri(url: &str) -> Result<ureq::http::Uri, ureq::http::Error> {
    let mut parts = url.parse::<ureq::http::Uri>()?.into_parts();
    parts.path_and_query = Some(ureq::http::uri::PathAndQuery::from_static("*"));
    Ok(ureq::http::Uri::from_parts(parts)?)
}

/// Maps a ureq error to what the client sees, and whether the request may have been sent.
fn classify(error: ureq::Error) -> AttemptError {
    use io::ErrorKind::*;
    use ureq::Error as E;
    use ureq::Timeout as T;
    match error {
        E::Timeout(T::Connect | T::Resolve) => AttemptError::NotSent(
            Refusal::new(504, "backend connect timed out").coded("connect_timeout"),
        ),
        E::Timeout(_) => {
            AttemptError::TimedOut(Refusal::new(504, "backend timed out").coded("backend_timeout"))
        }
        E::BadUri(_) | E::Http(_) => AttemptError::Invalid(Refusal::new(400, "malformed request")),
        E::HostNotFound => AttemptError::NotSent(
            Refusal::new(502, "backend host name does not resolve").coded("backend_unresolved"),
        ),
        E::ConnectionFailed => AttemptError::NotSent(
            Refusal::new(502, "backend unreachable").coded("backend_unreachable"),
        ),
        E::Io(e)
            if matches!(
                e.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) =>
        {
            AttemptError::NotSent(
                Refusal::new(502, "backend unreachable").coded("backend_unreachable"),
            )
        }
        E::Io(_) => AttemptError::Sent(
            Refusal::new(502, "connection to backend failed").coded("backend_failed"),
        ),
        _ => AttemptError::Sent(
            Refusal::new(502, "invalid answer from backend").coded("backend_invalid"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: "/x?y=1".into(),
            http10: false,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            client: "10.1.2.3".parse().unwrap(),
        }
    }

    #[test]
    fn connect_and_targets_other_than_paths_and_options_asterisk_are_refused() {
        assert_eq!(check_request(&head("GET", &[("Host", "a")])), Ok(()));
        let status = |h: RequestHead| check_request(&h).unwrap_err().status;
        assert_eq!(status(head("CONNECT", &[("Host", "a")])), 405);
        let mut h = head("OPTIONS", &[("Host", "a")]);
        h.target = "*".into();
        assert_eq!(check_request(&h), Ok(()));
        h.method = "GET".into();
        assert_eq!(status(h), 400);
        // The front end has rewritten an http:// target; anything else left is no path.
        let mut h = head("GET", &[("Host", "a")]);
        h.target = "a:80".into();
        assert_eq!(status(h), 400);
    }

    #[test]
    fn host_and_authorization_must_be_ascii_other_headers_need_not() {
        let with = |name: &str, value: &[u8]| {
            let mut h = head("GET", &[("Host", "a")]);
            h.headers.push((name.into(), value.to_vec()));
            h
        };
        assert_eq!(check_request(&with("X-Name", b"caf\xe9")), Ok(()));
        assert_eq!(check_request(&with("X-Name", b"caf\xc3\xa9")), Ok(()));
        assert_eq!(
            check_request(&with("Authorization", b"Basic\tYQ==")),
            Ok(())
        );
        for name in ["Authorization", "HOST"] {
            let refused = check_request(&with(name, b"caf\xe9")).unwrap_err();
            assert_eq!(refused.status, 400, "{name}");
        }
    }

    #[test]
    fn obs_text_values_reach_the_request_unchanged() {
        let mut h = head("GET", &[("Host", "a")]);
        h.headers
            .push(("X-Latin1".into(), b"caf\xe9 \xff".to_vec()));
        let out = backend_request_headers(&h, Framing::None);
        let (name, value) = &out[1];
        assert_eq!(
            (name.as_ref(), value.as_ref()),
            ("X-Latin1", &b"caf\xe9 \xff"[..])
        );
        // What the HTTP library will send: the same bytes.
        let sent = ureq::http::HeaderValue::from_bytes(value).unwrap();
        assert_eq!(sent.as_bytes(), b"caf\xe9 \xff");
    }

    #[test]
    fn the_asterisk_form_goes_out_as_an_asterisk() {
        let uri = asterisk_uri("http://127.0.0.1:8081").unwrap();
        assert_eq!(uri.authority().unwrap().as_str(), "127.0.0.1:8081");
        assert_eq!(uri.path_and_query().unwrap().as_str(), "*");
    }

    #[test]
    fn request_headers_drop_hop_by_hop_and_add_forwarded() {
        let h = head(
            "GET",
            &[
                ("Host", "example.test"),
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "x"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
                ("X-Forwarded-For", "192.0.2.1"),
                ("X-Forwarded-Proto", "https"),
            ],
        );
        let out = backend_request_headers(&h, Framing::None);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            names,
            [
                "Host",
                "Cookie",
                "Cookie",
                "X-Forwarded-For",
                "X-Forwarded-Proto",
                "X-Forwarded-Host"
            ]
        );
        assert_eq!(out[3].1.as_ref(), b"192.0.2.1, 10.1.2.3");
        assert_eq!(out[4].1.as_ref(), b"http");
        assert_eq!(out[5].1.as_ref(), b"example.test");
    }

    #[test]
    fn response_headers_drop_hop_by_hop() {
        let mut map = ureq::http::HeaderMap::new();
        for (k, v) in [
            ("content-type", "text/plain"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("upgrade", "h2c"),
        ] {
            map.append(k, v.parse().unwrap());
        }
        let headers = ResponseHeaders::new(map);
        let out: Vec<(&str, &[u8])> = headers.end_to_end().collect();
        assert_eq!(
            out,
            [
                ("content-type", &b"text/plain"[..]),
                ("set-cookie", b"a=1"),
                ("set-cookie", b"b=2")
            ]
        );
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent("GET") && is_idempotent("PUT") && is_idempotent("DELETE"));
        assert!(!is_idempotent("POST") && !is_idempotent("PATCH"));
    }

    struct Ignore;
    impl Observer for Ignore {
        fn record(&self, _: &Backend, _: bool, _: Duration) {}
    }

    fn settings(connect_ms: u64) -> ProxySettings {
        ProxySettings {
            connect_timeout: Duration::from_millis(connect_ms),
            response_timeout: Duration::from_secs(30),
            retries: 2,
            retry_timeouts: false,
            failure_statuses: vec![502, 503, 504],
            idle_connections: 16,
            max_request_head: 16 * 1024,
        }
    }

    #[test]
    fn one_agent_per_backend_kept_until_it_leaves_or_settings_change() {
        let backend = |id, url| {
            let config = crate::config::BackendConfig::parse(url, 1).unwrap();
            Arc::new(Backend::new(id, &config))
        };
        let (a, b) = (backend(1, "http://a:81"), backend(2, "http://b:82"));
        let pool = Arc::new(Pool::new(vec![Arc::clone(&a), Arc::clone(&b)]));
        let proxy = Proxy::new(
            Arc::clone(&pool),
            Arc::new(crate::pool::AlwaysAvailable),
            Arc::new(Ignore),
            RetryBudget::new(20),
            settings(2000),
        );
        let urls = |p: &Proxy| {
            let mut v: Vec<String> = p.agents.read().by_url.keys().cloned().collect();
            v.sort();
            v
        };
        proxy.agent(&a.url);
        proxy.agent(&b.url);
        proxy.agent(&a.url);
        assert_eq!(urls(&proxy), ["http://a:81", "http://b:82"]);

        // b leaves the pool: its agent (and its idle connections) go on reload.
        pool.set_backends(vec![Arc::clone(&a)]);
        proxy.reconfigure(settings(2000), 20);
        assert_eq!(urls(&proxy), ["http://a:81"]);

        // New timeouts: every agent is remade on next use.
        proxy.reconfigure(settings(500), 20);
        assert!(urls(&proxy).is_empty());
        proxy.agent(&a.url);
        assert_eq!(urls(&proxy), ["http://a:81"]);
    }

    /// A client body that breaks off after `n` bytes.
    struct BrokenUpload(usize);

    impl Read for BrokenUpload {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client left"));
            }
            let n = self.0.min(out.len());
            out[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_client_leaving_mid_upload_gives_the_half_open_trial_back() {
        use crate::backend::Resilience;
        use crate::clock::{Clock, ManualClock};
        // A backend that reads the request's head, then waits for a body that never comes whole.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            }
        });
        let clock = Arc::new(ManualClock::new());
        let config = crate::config::BackendConfig::parse(&url, 1).unwrap();
        let backend = Arc::new(Backend::new(0, &config));
        let now = clock.now();
        for _ in 0..5 {
            backend.record(false, Duration::ZERO, now);
        }
        clock.advance(Duration::from_secs(10));
        backend.tick(clock.now());
        assert!(backend.in_trial(), "half-open");
        let resilience = Arc::new(Resilience::new(clock.clone()));
        let pool = Arc::new(Pool::new(vec![Arc::clone(&backend)]));
        let proxy = Proxy::new(
            pool,
            resilience.clone(),
            resilience,
            RetryBudget::new(20),
            settings(2000),
        );
        let h = head("POST", &[("Host", "a")]);
        let failed = proxy
            .forward(
                &h,
                Framing::Length(100_000),
                &mut BrokenUpload(50_000),
                None,
            )
            .err()
            .expect("the upload broke off");
        assert_eq!(failed.refusal.status, 400, "{:?}", failed.refusal);
        // The trial slot is free again: the next request may be the trial.
        assert!(backend.admit(), "the trial slot was given back");
        assert!(!backend.admit(), "and there is still only one");
    }
}
