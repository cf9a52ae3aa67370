//! Forwarding one request: the HTTP rules a proxy must keep, retries, and error mapping.
//!
//! This folder works on the front end's parsed request head ([`RequestHead`]) and plain
//! `std::io::Read` bodies, so its rules can be tested without sockets; `server.rs` connects it
//! to the front end (`http/`). What a request may not be at all (`CONNECT`, a target that is not
//! a path) was refused before, at admission (`admission.rs`).
//!
//! What it guarantees (RFC 9110 / 9112):
//! - Transparency: method, request target (byte for byte), Host and end-to-end headers (values
//!   byte for byte, obs-text included), repeated headers, statuses and bodies pass through
//!   unchanged; redirects are not followed and bodies are not decompressed. An absolute-form
//!   target reaches the proxy already in origin form (`http::parse`); `OPTIONS *` is sent as is.
//! - Hop-by-hop headers (`Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`)
//!   are removed in both directions, except `Upgrade` and `Connection: upgrade` of an upgrade to
//!   an allowed protocol (`upgrade allow=websocket`): that request goes over a connection of its
//!   own (`upgrade.rs`), and a 101 answer hands the backend's socket to the caller for a tunnel.
//! - `X-Forwarded-For` gets the client's address appended; `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are set.
//! - A request with both `Content-Length` and `Transfer-Encoding`, or a bad `Content-Length`, is
//!   refused with 400 and never forwarded (by the front end, `http::parse`). An answer with a
//!   bad `Content-Length` (the same rule, `http::fields`) gets the client a 502, and its
//!   backend connection is closed, never reused.
//! - Retries go to a backend not yet tried: always when the request never reached a backend
//!   (connect failed), otherwise only for idempotent methods whose body was not read; at most
//!   `retries` extra attempts, and only while the [`RetryBudget`] allows (a request it refuses
//!   gets its last attempt's error, logged as `reason=retry_budget_exhausted`).
//! - A backend that took the request and did not answer within the response timeout is not
//!   retried (unless [`ProxySettings::retry_timeouts`]): the response timeout is then the longest
//!   a client waits for the answer's head, as with HAProxy's `timeout server`.
//!
//! This file is [`Proxy::forward`], read top to bottom: pick a backend, attempt, record how it
//! went, retry on another backend when that is safe. Beside it: `headers.rs` (hop-by-hop and
//! `X-Forwarded-*`), `client_body.rs` (the client's body, and whose fault a broken upload is),
//! `outcome.rs` (what an attempt and a forward end in), and the upstream side: `upstream.rs`
//! (one ureq agent per backend), `transport.rs` (the TCP connector), `resolver.rs` (the name
//! cache) and `upgrade.rs` (an upgrade request's exchange, outside ureq).

mod client_body;
mod headers;
mod outcome;
pub mod resolver;
pub mod transport;
mod upgrade;
mod upstream;

pub use headers::{backend_request_headers, upgrade_protocols, HeaderPair, ResponseHeaders};
pub use outcome::{Failed, Forwarded};
pub use upgrade::Upgraded;

// Compatibility: `check_request` runs at admission, on the poller, and so lives in
// `admission.rs`; this path keeps code written against `proxy::check_request` compiling.
#[doc(no_inline)]
pub use crate::admission::check_request;

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::balance::backend::Backend;
use crate::balance::retry::{self, RetryBudget};
use crate::balance::{selection::Pool, Availability};
use crate::explain::Explanation;
use crate::http::fields::content_length;
use crate::http::{Framing, Refusal, RequestHead};
use client_body::ClientBody;
use outcome::{classify, invalid_length, Answer, AttemptError};
use upstream::{AgentCache, AgentSettings};

/// Defined in `balance/` beside the backends whose state it feeds; re-exported here, where the
/// proxy calls it.
pub use crate::balance::Observer;

/// Forwarding settings (from [`crate::Config`]).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Backend connect timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Time for the response head, and between body reads. Default 30 s.
    pub response_timeout: Duration,
    /// Time each write of the request to a backend may take (a backend that stops reading an
    /// upload gets the request 504). Default: the response timeout.
    pub send_timeout: Duration,
    /// Extra attempts on other backends. Default 2.
    pub retries: u32,
    /// Also retry (idempotent requests, body unread) after a backend timed out while it held the
    /// request. Default off: each retry would add a whole response timeout to the client's wait.
    pub retry_timeouts: bool,
    /// Statuses that count as backend failures. Default 502, 503, 504.
    pub failure_statuses: Vec<u16>,
    /// The largest request head a client may send (`limits max_head=`), so that the buffer a
    /// backend connection writes from can hold it with the forwarding headers. Default 16 KiB.
    pub max_request_head: usize,
    /// The protocols a client may switch to (`upgrade allow=`, lowercase); empty: none.
    /// Default `websocket`.
    pub upgrade: Vec<String>,
}

impl ProxySettings {
    /// The settings the ureq agents are made with.
    fn agents(&self) -> AgentSettings {
        AgentSettings {
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            send_timeout: self.send_timeout,
            max_request_head: self.max_request_head,
        }
    }
}

/// Forwards requests over pooled ureq agents shared by all workers, one agent per backend.
pub struct Proxy {
    agents: AgentCache,
    pool: Arc<Pool>,
    availability: Arc<dyn Availability>,
    observer: Arc<dyn Observer>,
    budget: RetryBudget,
    settings: RwLock<ProxySettings>,
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
            agents: AgentCache::new(settings.agents()),
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
        let urls: HashSet<String> = self.pool.backends().iter().map(|b| b.url.clone()).collect();
        self.agents.reconfigure(settings.agents(), urls);
        *current = settings;
        self.budget.set_percent(retry_budget_percent);
    }

    /// The retry budget: what it holds now is shown on `/status` and `/metrics`.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// The pool this proxy picks from.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The `Upgrade` value to forward when `head` asks to switch to an allowed protocol (see
    /// [`upgrade_protocols`]); `None` for every other request, which costs one look for an
    /// `Upgrade` header and nothing else.
    pub fn upgrade_of(&self, head: &RequestHead, framing: Framing) -> Option<Vec<u8>> {
        head.header_bytes("upgrade")?;
        upgrade_protocols(head, framing, &self.settings.read().upgrade)
    }

    /// Forwards one request, retrying on other backends when that is safe. `framing` is the
    /// body's framing as the front end parsed it; `body` is the client's body stream; a body
    /// longer than `max_body` is cut off and answered with 413. `upgrade` (from
    /// [`Proxy::upgrade_of`]) makes it an upgrade request: sent with `Upgrade: upgrade` on a
    /// connection of its own, whose socket a 101 hands back in [`Forwarded::upgraded`].
    pub fn forward(
        &self,
        head: &RequestHead,
        framing: Framing,
        body: &mut dyn Read,
        max_body: Option<u64>,
        upgrade: Option<&[u8]>,
    ) -> Result<Forwarded, Failed> {
        self.forward_traced(head, framing, body, max_body, upgrade, None)
    }

    /// [`Proxy::forward`], also writing down in `explanation` what it decided: every pick (the
    /// last one's scores, any backend refused), the attempts retried and why, the backend of the
    /// last attempt, and the balancer's own answer when it gave one.
    pub fn forward_explained(
        &self,
        head: &RequestHead,
        framing: Framing,
        body: &mut dyn Read,
        max_body: Option<u64>,
        upgrade: Option<&[u8]>,
        explanation: &mut Explanation,
    ) -> Result<Forwarded, Failed> {
        let explain = Some(&mut *explanation);
        let result = self.forward_traced(head, framing, body, max_body, upgrade, explain);
        if let Err(failed) = &result {
            explanation.refused = Some((failed.refusal.status, failed.refusal.code));
        }
        result
    }

    fn forward_traced(
        &self,
        head: &RequestHead,
        framing: Framing,
        body: &mut dyn Read,
        max_body: Option<u64>,
        upgrade: Option<&[u8]>,
        mut explain: Option<&mut Explanation>,
    ) -> Result<Forwarded, Failed> {
        self.budget.deposit();
        let headers = backend_request_headers(head, framing, upgrade);
        let mut body = ClientBody::new(body, framing, max_body);
        let mut tried: Vec<u64> = Vec::new();
        let mut via: Vec<Arc<Backend>> = Vec::new();
        let mut last: Option<(Refusal, Arc<Backend>)> = None;
        loop {
            let attempts = tried.len() as u32;
            let Some(backend) = self.pick(&tried, explain.as_deref_mut()) else {
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
            let verdict = Verdict::pending(self, Arc::clone(&backend));
            let in_flight = backend.begin();
            let started = Instant::now();
            let result = match upgrade {
                Some(protocols) => {
                    upgrade::attempt(&backend, head, &headers, protocols, self.upgrade_timeouts())
                }
                None => self.attempt(&backend, head, framing, &headers, &mut body),
            };
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
                    verdict.record(ok, latency);
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
                        upgraded: answer.upgraded,
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
            verdict.record(false, latency);
            drop(in_flight);
            let safe_to_resend = is_idempotent(&head.method) && body.read == 0;
            let refusal = match self.retry(error, safe_to_resend, attempts, &backend) {
                Ok(refusal) => refusal,
                Err(refusal) => {
                    return Err(body.failure(refusal, Some(backend), attempts + 1, &mut via))
                }
            };
            if let Some(explanation) = explain.as_deref_mut() {
                explanation
                    .retries
                    .push((Arc::clone(&backend), refusal.code));
            }
            // Only a retried request keeps the list, so that most requests allocate none.
            via.push(Arc::clone(&backend));
            last = Some((refusal, backend));
        }
    }

    /// Whether attempt number `attempts + 1`, which failed on `backend` with `error`, may be
    /// retried on another backend: Ok with the error's refusal when it may (the budget has paid for
    /// the retry), Err with what the client gets when it may not.
    fn retry(
        &self,
        error: AttemptError,
        safe_to_resend: bool,
        attempts: u32,
        backend: &Backend,
    ) -> Result<Refusal, Refusal> {
        let (max_retries, retry_timeouts) = {
            let settings = self.settings.read();
            (settings.retries, settings.retry_timeouts)
        };
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
        if !retryable || attempts >= max_retries {
            return Err(refusal);
        }
        if !self.budget.withdraw() {
            // The client's answer is the same; the log and the counters say why it came.
            return Err(refusal.coded(retry::EXHAUSTED));
        }
        Ok(refusal)
    }

    /// The next backend for a request that has tried `tried`. With an explanation the pick is
    /// traced into it; without, it is the plain pick, which allocates no trace.
    fn pick(&self, tried: &[u64], explain: Option<&mut Explanation>) -> Option<Arc<Backend>> {
        let Some(explanation) = explain else {
            return self.pool.pick(&*self.availability, tried);
        };
        let chosen = self
            .pool
            .pick_explained(&*self.availability, tried, &mut explanation.trace);
        explanation.chosen.clone_from(&chosen);
        chosen
    }

    /// Sends the request to `backend` once and reads its answer's head.
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
        let response = self.agents.with_agent(&backend.url, |agent| {
            let response = match framing {
                Framing::None => {
                    agent.run(builder.body(ureq::SendBody::none()).map_err(malformed)?)
                }
                Framing::Length(_) | Framing::Chunked => {
                    let body = ureq::SendBody::from_reader(body);
                    agent.run(builder.body(body).map_err(malformed)?)
                }
            };
            response.map_err(classify)
        })?;
        let status = response.status().as_u16();
        if status == 101 {
            // Not asked for (an allowed upgrade goes through `upgrade.rs`): the connection now
            // speaks something else, and the answer cannot be relayed as HTTP.
            let refusal = Refusal::new(502, "backend switched protocols unasked");
            return Err(AttemptError::Sent(refusal.coded("backend_invalid")));
        }
        let (parts, body) = response.into_parts();
        let headers = ResponseHeaders::new(parts.headers);
        // The same rule as for a client's request (`http::fields`): a malformed length is a
        // 502, never a guess. ureq has read the length by that rule too, to frame the body: a
        // malformed one failed the call above (`classify`: 502), its connection closed, never
        // pooled. Checking here as well keeps the rule ours, whatever the library's version.
        let length = content_length(headers.values("content-length"))
            .map_err(|bad| AttemptError::Sent(invalid_length(bad)))?;
        let chunked = headers.values("transfer-encoding").next().is_some();
        Ok(Answer {
            status,
            headers,
            content_length: length.filter(|_| !chunked),
            body: Box::new(body.into_reader()),
            upgraded: None,
        })
    }

    /// The timeouts of an upgrade request's exchange: connect, send, response.
    fn upgrade_timeouts(&self) -> upgrade::Timeouts {
        let settings = self.settings.read();
        upgrade::Timeouts {
            connect: settings.connect_timeout,
            send: settings.send_timeout,
            response: settings.response_timeout,
        }
    }
}

/// The verdict on one attempt, owed to the [`Observer`]. An attempt that ends without one (the
/// request was invalid, or its client broke off the upload: nothing says how the backend is)
/// gives back, when dropped, the half-open trial slot its pick took, so that a breaker can never
/// be left waiting for a trial that will not come.
struct Verdict<'p> {
    proxy: &'p Proxy,
    backend: Arc<Backend>,
    /// The pick took the backend's half-open trial slot.
    trial: bool,
    recorded: bool,
}

impl<'p> Verdict<'p> {
    fn pending(proxy: &'p Proxy, backend: Arc<Backend>) -> Verdict<'p> {
        Verdict {
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

impl Drop for Verdict<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.trial {
            self.proxy.availability.release(&self.backend);
        }
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The URI for `OPTIONS *` to the backend at `url` (`http://host:port`). The http crate takes
/// `*` as a path, and ureq sends a URI's path and query as the request target: the asterisk
/// form goes out as the client sent it. (A string `http://host:port*` would not parse.)
fn asterisk_uri(url: &str) -> Result<ureq::http::Uri, ureq::http::Error> {
    let mut parts = url.parse::<ureq::http::Uri>()?.into_parts();
    parts.path_and_query = Some(ureq::http::uri::PathAndQuery::from_static("*"));
    Ok(ureq::http::Uri::from_parts(parts)?)
}

#[cfg(test)]
mod tests {
    use super::headers::tests::head;
    use super::*;
    use std::io;

    #[test]
    fn the_asterisk_form_goes_out_as_an_asterisk() {
        let uri = asterisk_uri("http://127.0.0.1:8081").unwrap();
        assert_eq!(uri.authority().unwrap().as_str(), "127.0.0.1:8081");
        assert_eq!(uri.path_and_query().unwrap().as_str(), "*");
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
            send_timeout: Duration::from_secs(30),
            retries: 2,
            retry_timeouts: false,
            failure_statuses: vec![502, 503, 504],
            max_request_head: 16 * 1024,
            upgrade: vec!["websocket".into()],
        }
    }

    #[test]
    fn one_agent_per_backend_and_thread_kept_until_the_backends_or_settings_change() {
        let backend = |id, url| {
            let config = crate::config::BackendConfig::parse(url, 1).unwrap();
            Arc::new(Backend::new(id, &config))
        };
        let (a, b) = (backend(1, "http://a:81"), backend(2, "http://b:82"));
        let pool = Arc::new(Pool::new(vec![Arc::clone(&a), Arc::clone(&b)]));
        let proxy = Proxy::new(
            Arc::clone(&pool),
            Arc::new(crate::balance::AlwaysAvailable),
            Arc::new(Ignore),
            RetryBudget::new(20, Arc::new(crate::clock::SystemClock)),
            settings(2000),
        );
        let urls = |p: &Proxy| {
            let mut v: Vec<String> = p.agents.urls();
            v.sort();
            v
        };
        let agent = |url: &str| proxy.agents.with_agent(url, |_| ());
        // The set of backends the agents are for is set by the first reload (start-up).
        proxy.reconfigure(settings(2000), 20);
        agent(&a.url);
        agent(&b.url);
        agent(&a.url);
        assert_eq!(urls(&proxy), ["http://a:81", "http://b:82"]);

        // A reload that changes nothing keeps them (and their connections).
        proxy.reconfigure(settings(2000), 20);
        assert_eq!(urls(&proxy), ["http://a:81", "http://b:82"]);

        // b leaves the pool: this thread's agents are made again on next use, without b's.
        pool.set_backends(vec![Arc::clone(&a)]);
        proxy.reconfigure(settings(2000), 20);
        assert!(urls(&proxy).is_empty());
        agent(&a.url);
        assert_eq!(urls(&proxy), ["http://a:81"]);

        // New timeouts: the same.
        proxy.reconfigure(settings(500), 20);
        assert!(urls(&proxy).is_empty());
        agent(&a.url);
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
        use crate::balance::resilience::Resilience;
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
            RetryBudget::new(20, Arc::new(crate::clock::SystemClock)),
            settings(2000),
        );
        let h = head("POST", &[("Host", "a")]);
        let failed = proxy
            .forward(
                &h,
                Framing::Length(100_000),
                &mut BrokenUpload(50_000),
                None,
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
