//! The admin listener's pages: a live dashboard (`/`), the same data as JSON (`/status`) and
//! Prometheus metrics (`/metrics`).
//!
//! The admin listener is separate from the proxy port (default `127.0.0.1:9090`, config
//! `admin ADDR [token=SECRET]` or `admin off`, flag `--admin`). When a token is configured every
//! path requires it, either as `Authorization: Bearer SECRET` or as `?token=SECRET` in the query
//! (so a browser can open the dashboard; the page passes the same token on when it fetches
//! `/status`). Without it the answer is `401` with `WWW-Authenticate: Bearer`.
//!
//! Every answer is built from one [`View`] taken at the moment of the request: backend
//! snapshots ([`crate::backend::Snapshot`]), balancer-wide counters ([`crate::metrics::Metrics`])
//! and the filter's counters and bans. JSON and the Prometheus text are written by hand (no
//! serialisation dependency): see [`json_str`] and [`label_value`] for the escaping rules.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /` | the dashboard: HTML + CSS + a little JavaScript that fetches `/status` every second |
//! | `GET /status` | JSON, `application/json` |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /health` | readiness of the balancer itself: `200 ok` while a backend can take traffic, `503` and the reason otherwise; no token needed |
//! | any other path | 404 |
//! | a method other than GET or HEAD | 405 with `Allow: GET, HEAD` |

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use crate::backend::Snapshot;
use crate::Shared;

/// The dashboard page, served as is. It renders everything with `textContent`, never with
/// `innerHTML`, so no value from `/status` is ever interpreted as markup.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The `Content-Security-Policy` of the dashboard: its own inline style and script, fetches to
/// this origin only, nothing else (no external requests, no frames, no forms).
const DASHBOARD_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

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

    fn ok(content_type: &'static str, body: String) -> AdminResponse {
        AdminResponse {
            status: 200,
            content_type,
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> AdminResponse {
        self.headers.push((name, value.into()));
        self
    }
}

/// Answers one admin request from the balancer's shared state.
pub fn handle(shared: &Shared, request: &AdminRequest) -> AdminResponse {
    let (path, query) = match request.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (request.target.as_str(), ""),
    };
    // Readiness probes (a load balancer in front, systemd, Kubernetes) seldom carry a secret,
    // and the answer reveals no more than "ready or not", so /health needs no token.
    if path == "/health" && (request.method == "GET" || request.method == "HEAD") {
        return readiness(shared).header("Cache-Control", "no-store");
    }
    let token = shared.config.read().admin_token.clone();
    if let Some(token) = token {
        if !authorized(&token, request.authorization.as_deref(), query) {
            return AdminResponse::text(401, "unauthorized: this admin listener needs its token")
                .header("WWW-Authenticate", "Bearer realm=\"loadbalancer admin\"")
                .header("Cache-Control", "no-store");
        }
    }
    if request.method != "GET" && request.method != "HEAD" {
        return AdminResponse::text(405, "method not allowed: use GET or HEAD")
            .header("Allow", "GET, HEAD")
            .header("Cache-Control", "no-store");
    }
    let response = match path {
        "/" => AdminResponse::ok("text/html; charset=utf-8", DASHBOARD_HTML.to_string())
            .header("Content-Security-Policy", DASHBOARD_CSP)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer"),
        "/status" => AdminResponse::ok("application/json", status_json(&View::collect(shared))),
        "/metrics" => AdminResponse::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(&View::collect(shared)),
        ),
        _ => AdminResponse::text(404, "not found: try /, /status, /metrics or /health"),
    };
    response.header("Cache-Control", "no-store")
}

/// `/health`: 200 `ok` while at least one backend can take traffic (healthy, breaker not
/// open) and the balancer is not shutting down, else 503 saying why, so whatever sits in front
/// of the balancer can route around it.
fn readiness(shared: &Shared) -> AdminResponse {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return AdminResponse::text(503, "not ready: shutting down");
    }
    if let Some((name, _)) = shared.threads.read().iter().find(|(_, alive)| !alive()) {
        return AdminResponse::text(503, &format!("not ready: the {name} thread is not running"));
    }
    let backends = shared.pool.backends();
    if backends.iter().any(|b| b.is_available()) {
        return AdminResponse::text(200, "ok");
    }
    AdminResponse::text(
        503,
        &format!(
            "not ready: none of the {} backends is available (unhealthy or breaker open)",
            backends.len()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------------------------

/// True when the request carries `token`: as `Authorization: Bearer TOKEN` or as `token=TOKEN`
/// in the query (percent-decoded). Comparisons take the same time wherever the first
/// difference is.
fn authorized(token: &str, authorization: Option<&str>, query: &str) -> bool {
    let bearer = authorization.and_then(|h| {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    let from_query = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    });
    // Look at both, so the time taken does not tell which one was present.
    let by_header = bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token.as_bytes()));
    let by_query = from_query.is_some_and(|q| constant_time_eq(&q, token.as_bytes()));
    by_header | by_query
}

/// Compares two byte strings in time that depends only on `presented`'s length, never on where
/// they differ.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, p) in presented.iter().enumerate() {
        let e = if expected.is_empty() {
            0
        } else {
            expected[i % expected.len()]
        };
        diff |= p ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it) in a query value.
fn percent_decode(s: &str) -> Vec<u8> {
    crate::percent::decode(s.as_bytes(), |b| if b == b'+' { b' ' } else { b })
}

// ---------------------------------------------------------------------------------------------
// What the pages show
// ---------------------------------------------------------------------------------------------

/// Everything the admin pages show, taken at one moment.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Time since the balancer started.
    pub uptime: Duration,
    /// Attempts per second over the share window (the last minute).
    pub requests_per_s: f64,
    /// Requests waiting for a worker.
    pub queue_depth: usize,
    /// What the front end's workers and poller are doing.
    pub front: crate::http::FrontStats,
    /// What the buffers between clients and workers hold.
    pub buffers: crate::http::BufferStats,
    /// Panics caught (or fatal) since start, by thread kind.
    pub panics: Vec<(&'static str, u64)>,
    /// `(status, count)` for every status sent.
    pub responses: Vec<(u16, u64)>,
    /// Cumulative request-duration buckets `(le seconds, count)`, the last one `+Inf`.
    pub duration_buckets: Vec<(f64, u64)>,
    /// Sum of request durations, seconds.
    pub duration_sum: f64,
    /// Requests timed.
    pub duration_count: u64,
    /// Retries made.
    pub retries: u64,
    /// Requests the balancer answered itself, by reason.
    pub rejections: Vec<(&'static str, u64)>,
    /// Requests the filter refused, by reason.
    pub refused: Vec<(&'static str, u64)>,
    /// Clients banned now, with seconds left.
    pub bans: Vec<(IpAddr, u64)>,
    /// Every backend, in pool order, with its share (0..=1) of the last minute's attempts.
    pub backends: Vec<(Snapshot, f64)>,
}

impl View {
    /// Takes the view of `shared` now.
    pub fn collect(shared: &Shared) -> View {
        let now = shared.now();
        let slow_start = shared.maintenance.read().slow_start;
        let backends = shared.pool.backends();
        let (shares, requests_per_s) = shared.metrics.shares(&backends);
        let backends = backends
            .iter()
            .map(|b| {
                let share = shares
                    .iter()
                    .find(|(id, _)| *id == b.id)
                    .map_or(0.0, |(_, s)| *s);
                (b.snapshot(now, slow_start), share)
            })
            .collect();
        let (duration_buckets, duration_sum, duration_count) = shared.metrics.duration_histogram();
        let filter = shared.filter.stats(now);
        View {
            uptime: shared.metrics.uptime(),
            requests_per_s,
            queue_depth: shared.queue_depth(),
            front: shared.front.stats(),
            buffers: shared.buffers.stats(),
            panics: crate::supervise::panics(),
            responses: shared.metrics.responses_by_status(),
            duration_buckets,
            duration_sum,
            duration_count,
            retries: shared.metrics.retries(),
            rejections: shared.metrics.rejections(),
            refused: filter.refused,
            bans: filter.bans,
            backends,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /status: JSON
// ---------------------------------------------------------------------------------------------

/// Appends `s` as a JSON string literal: quotes, backslashes and control characters escaped;
/// `<`, `>` and `&` too, so the text stays inert even if someone pastes it into HTML.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a JSON number, or `null` when `x` is not finite (JSON has no NaN or infinity).
pub fn json_f64(out: &mut String, x: f64) {
    if x.is_finite() {
        let _ = write!(out, "{x}");
    } else {
        out.push_str("null");
    }
}

/// `x` rounded to `digits` decimals (non-finite values pass through).
fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    let r = (x * m).round() / m;
    if r.is_finite() {
        r
    } else {
        x
    }
}

/// The `/status` document. Field names are stable; see the README's "/status fields".
pub fn status_json(v: &View) -> String {
    let mut o = String::with_capacity(1024 + 512 * v.backends.len());
    o.push_str("{\"uptime_s\":");
    json_f64(&mut o, round(v.uptime.as_secs_f64(), 3));
    o.push_str(",\"requests_per_s\":");
    json_f64(&mut o, round(v.requests_per_s, 3));
    let _ = write!(o, ",\"queue_depth\":{}", v.queue_depth);
    let (f, b) = (&v.front, &v.buffers);
    let _ = write!(
        o,
        ",\"front\":{{\"workers_busy\":{},\"bodies_buffering\":{},\"answers_flushing\":{},\
         \"backpressure_waits\":{},\"stalled_readers_closed\":{}}}",
        f.workers_busy,
        f.bodies_buffering,
        f.answers_flushing,
        f.backpressure_waits,
        f.stalled_readers_closed
    );
    let _ = write!(
        o,
        ",\"buffers\":{{\"memory_bytes\":{},\"file_bytes\":{},\"spilled\":{},\"full\":{}}}",
        b.memory_bytes, b.file_bytes, b.spilled, b.full
    );
    o.push_str(",\"thread_panics\":{");
    for (i, (kind, n)) in v.panics.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        json_str(&mut o, kind);
        let _ = write!(o, ":{n}");
    }
    o.push('}');
    let total: u64 = v.responses.iter().map(|(_, n)| n).sum();
    let _ = write!(o, ",\"responses_total\":{total}");
    let _ = write!(o, ",\"retries\":{}", v.retries);
    o.push_str(",\"responses\":{");
    for (i, (code, n)) in v.responses.iter().enumerate() {
        let _ = write!(o, "{}\"{code}\":{n}", if i > 0 { "," } else { "" });
    }
    o.push_str("},\"request_duration\":{");
    let _ = write!(o, "\"count\":{},\"sum_s\":", v.duration_count);
    json_f64(&mut o, round(v.duration_sum, 6));
    o.push_str(",\"mean_ms\":");
    if v.duration_count > 0 {
        json_f64(
            &mut o,
            round(v.duration_sum * 1000.0 / v.duration_count as f64, 3),
        );
    } else {
        o.push_str("null");
    }
    o.push_str("},\"rejections\":");
    json_counts(&mut o, &v.rejections);
    o.push_str(",\"filter\":{\"refused\":");
    json_counts(&mut o, &v.refused);
    o.push_str(",\"bans\":[");
    for (i, (ip, left)) in v.bans.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"client\":");
        json_str(&mut o, &ip.to_string());
        let _ = write!(o, ",\"seconds_left\":{left}}}");
    }
    o.push_str("]},\"backends\":[");
    for (i, (b, share)) in v.backends.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let _ = write!(o, "{{\"id\":{},\"name\":", b.id);
        json_str(&mut o, &b.name);
        o.push_str(",\"url\":");
        json_str(&mut o, &b.url);
        o.push_str(",\"state\":");
        json_str(&mut o, b.state);
        let _ = write!(o, ",\"healthy\":{},\"breaker\":", b.healthy);
        json_str(&mut o, b.breaker);
        let _ = write!(o, ",\"weight\":{},\"effective_weight\":", b.weight);
        json_f64(&mut o, round(b.effective_weight, 3));
        o.push_str(",\"latency_ms\":");
        match b.latency_ms {
            Some(ms) => json_f64(&mut o, round(ms, 3)),
            None => o.push_str("null"),
        }
        o.push_str(",\"failure_rate\":");
        json_f64(&mut o, round(b.failure_rate, 4));
        let _ = write!(
            o,
            ",\"in_flight\":{},\"requests\":{},\"failures\":{},\"bytes_out\":{},\"share\":",
            b.in_flight, b.requests, b.failures, b.bytes_out
        );
        json_f64(&mut o, round(*share, 4));
        o.push_str(",\"last_error\":");
        match &b.last_error {
            Some(e) => json_str(&mut o, e),
            None => o.push_str("null"),
        }
        o.push('}');
    }
    o.push_str("]}\n");
    o
}

/// Appends `{"label":count,...}`.
fn json_counts(o: &mut String, counts: &[(&str, u64)]) {
    o.push('{');
    for (i, (label, n)) in counts.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        json_str(o, label);
        let _ = write!(o, ":{n}");
    }
    o.push('}');
}

// ---------------------------------------------------------------------------------------------
// /metrics: Prometheus text format 0.0.4
// ---------------------------------------------------------------------------------------------

/// Escapes a label value for the Prometheus text format: backslash, double quote and newline.
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value in Prometheus' float syntax (`+Inf`, `-Inf`, `NaN` for the special values).
fn prom_f64(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == f64::INFINITY {
        "+Inf".into()
    } else if x == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{x}")
    }
}

/// Writes `# HELP` and `# TYPE` for one family.
/// One sample per `(reason, count)`, labelled `reason`.
fn by_reason(o: &mut String, name: &str, counts: &[(&'static str, u64)]) {
    for (reason, n) in counts {
        let _ = writeln!(o, "{name}{{reason=\"{}\"}} {n}", label_value(reason));
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// The `/metrics` page. Metric names are listed in the README's "Metrics" section.
///
/// `lb_backend_breaker_state` is one gauge per backend: 0 closed, 1 open, 2 half-open.
pub fn metrics_text(v: &View) -> String {
    let mut o = String::with_capacity(4096 + 1024 * v.backends.len());
    let labels: Vec<String> = v
        .backends
        .iter()
        .map(|(b, _)| format!("backend=\"{}\"", label_value(&b.name)))
        .collect();
    let per_backend = |o: &mut String,
                       name: &str,
                       kind: &str,
                       help: &str,
                       value: &dyn Fn(&Snapshot) -> Option<String>| {
        family(o, name, kind, help);
        for ((b, _), l) in v.backends.iter().zip(&labels) {
            if let Some(x) = value(b) {
                let _ = writeln!(o, "{name}{{{l}}} {x}");
            }
        }
    };
    per_backend(
        &mut o,
        "lb_backend_requests_total",
        "counter",
        "Attempts sent to the backend (a retry counts once per backend tried).",
        &|b| Some(b.requests.to_string()),
    );
    per_backend(
        &mut o,
        "lb_backend_failures_total",
        "counter",
        "Attempts that failed: transport error, timeout, or a failure status (502/503/504).",
        &|b| Some(b.failures.to_string()),
    );
    per_backend(
        &mut o,
        "lb_backend_in_flight",
        "gauge",
        "Requests being forwarded to the backend right now.",
        &|b| Some(b.in_flight.to_string()),
    );
    per_backend(
        &mut o,
        "lb_backend_bytes_out_total",
        "counter",
        "Response body bytes relayed from the backend to clients.",
        &|b| Some(b.bytes_out.to_string()),
    );
    per_backend(
        &mut o,
        "lb_backend_weight",
        "gauge",
        "Configured weight.",
        &|b| Some(b.weight.to_string()),
    );
    per_backend(
        &mut o,
        "lb_backend_effective_weight",
        "gauge",
        "Weight the balancer uses now, in units of the configured weight (latency, failures and slow start lower it).",
        &|b| Some(prom_f64(b.effective_weight)),
    );
    per_backend(
        &mut o,
        "lb_backend_latency_ewma_seconds",
        "gauge",
        "Moving average of the time to the response head; absent until measured.",
        &|b| b.latency_ms.map(|ms| prom_f64(ms / 1000.0)),
    );
    per_backend(
        &mut o,
        "lb_backend_failure_rate",
        "gauge",
        "Moving average of the share of attempts that failed, 0 to 1.",
        &|b| Some(prom_f64(b.failure_rate)),
    );
    per_backend(
        &mut o,
        "lb_backend_healthy",
        "gauge",
        "1 when health checks pass (or are off), 0 otherwise.",
        &|b| Some(u8::from(b.healthy).to_string()),
    );
    per_backend(
        &mut o,
        "lb_backend_breaker_state",
        "gauge",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        &|b| {
            Some(
                match b.breaker {
                    "closed" => "0",
                    "open" => "1",
                    _ => "2",
                }
                .to_string(),
            )
        },
    );
    per_backend(
        &mut o,
        "lb_backend_share",
        "gauge",
        "Share of the attempts over the last minute that went to the backend, 0 to 1.",
        &|b| {
            v.backends
                .iter()
                .find(|(s, _)| s.id == b.id)
                .map(|(_, share)| prom_f64(*share))
        },
    );

    family(
        &mut o,
        "lb_responses_total",
        "counter",
        "Responses sent to clients, by status code.",
    );
    for (code, n) in &v.responses {
        let _ = writeln!(o, "lb_responses_total{{code=\"{code}\"}} {n}");
    }
    family(
        &mut o,
        "lb_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the end of its response.",
    );
    for (le, n) in &v.duration_buckets {
        let _ = writeln!(
            o,
            "lb_request_duration_seconds_bucket{{le=\"{}\"}} {n}",
            prom_f64(*le)
        );
    }
    let _ = writeln!(
        o,
        "lb_request_duration_seconds_sum {}",
        prom_f64(v.duration_sum)
    );
    let _ = writeln!(o, "lb_request_duration_seconds_count {}", v.duration_count);
    family(
        &mut o,
        "lb_retries_total",
        "counter",
        "Extra attempts made on another backend.",
    );
    let _ = writeln!(o, "lb_retries_total {}", v.retries);
    family(
        &mut o,
        "lb_rejections_total",
        "counter",
        "Requests the balancer answered itself without asking a backend, by reason.",
    );
    by_reason(&mut o, "lb_rejections_total", &v.rejections);
    family(
        &mut o,
        "lb_filtered_total",
        "counter",
        "Requests refused by the filter (deny/allow lists, rate limits, bans, request rules), by reason.",
    );
    by_reason(&mut o, "lb_filtered_total", &v.refused);
    family(
        &mut o,
        "lb_queue_depth",
        "gauge",
        "Requests waiting for a worker.",
    );
    let _ = writeln!(o, "lb_queue_depth {}", v.queue_depth);
    family(
        &mut o,
        "lb_workers_busy",
        "gauge",
        "Workers answering a request now (the rest wait for one).",
    );
    let _ = writeln!(o, "lb_workers_busy {}", v.front.workers_busy);
    family(
        &mut o,
        "lb_slow_client_connections",
        "gauge",
        "Connections waiting on a client, not on a worker: request bodies being buffered (upload), answers being finished (download).",
    );
    let _ = writeln!(
        o,
        "lb_slow_client_connections{{waiting=\"upload\"}} {}",
        v.front.bodies_buffering
    );
    let _ = writeln!(
        o,
        "lb_slow_client_connections{{waiting=\"download\"}} {}",
        v.front.answers_flushing
    );
    family(
        &mut o,
        "lb_buffer_bytes",
        "gauge",
        "Bytes held for slow clients, in memory and in temporary files.",
    );
    let _ = writeln!(
        o,
        "lb_buffer_bytes{{in=\"memory\"}} {}",
        v.buffers.memory_bytes
    );
    let _ = writeln!(o, "lb_buffer_bytes{{in=\"file\"}} {}", v.buffers.file_bytes);
    for (name, help, value) in [
        (
            "lb_buffer_spills_total",
            "Times a buffer went on into a temporary file.",
            v.buffers.spilled,
        ),
        (
            "lb_buffer_full_total",
            "Times a buffer was full (buffers temp_file= or temp_total= reached, or the disk failed).",
            v.buffers.full,
        ),
        (
            "lb_backpressure_waits_total",
            "Times a worker waited for a client because the buffers were full.",
            v.front.backpressure_waits,
        ),
        (
            "lb_stalled_readers_closed_total",
            "Clients closed for taking nothing of an answer within timeouts client=.",
            v.front.stalled_readers_closed,
        ),
    ] {
        family(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {value}");
    }
    family(
        &mut o,
        "lb_thread_panics_total",
        "counter",
        "Panics of long-lived threads, by kind (see supervise.rs: each survives or ends the process).",
    );
    for (kind, n) in &v.panics {
        let _ = writeln!(o, "lb_thread_panics_total{{thread=\"{kind}\"}} {n}");
    }
    family(
        &mut o,
        "lb_bans_active",
        "gauge",
        "Clients banned right now.",
    );
    let _ = writeln!(o, "lb_bans_active {}", v.bans.len());
    family(
        &mut o,
        "lb_requests_per_second",
        "gauge",
        "Attempts per second over the last minute.",
    );
    let _ = writeln!(o, "lb_requests_per_second {}", prom_f64(v.requests_per_s));
    family(
        &mut o,
        "lb_uptime_seconds",
        "gauge",
        "Seconds since the balancer started.",
    );
    let _ = writeln!(
        o,
        "lb_uptime_seconds {}",
        prom_f64(round(v.uptime.as_secs_f64(), 3))
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;
    use crate::{Balancer, Config};

    fn json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON ({e}): {s}"))
    }

    fn snapshot(name: &str) -> Snapshot {
        Snapshot {
            id: 7,
            name: name.into(),
            url: format!("http://{name}"),
            state: "healthy",
            healthy: true,
            breaker: "closed",
            weight: 2,
            effective_weight: 1.5,
            latency_ms: None,
            failure_rate: 0.0,
            in_flight: 1,
            requests: 10,
            failures: 2,
            bytes_out: 300,
            last_error: Some("health check: \"bad\"\n\u{1}<x>".into()),
        }
    }

    fn view() -> View {
        View {
            uptime: Duration::from_millis(1500),
            requests_per_s: f64::NAN,
            queue_depth: 3,
            front: crate::http::FrontStats {
                workers_busy: 2,
                answers_flushing: 4,
                ..Default::default()
            },
            buffers: crate::http::BufferStats {
                file_bytes: 4096,
                ..Default::default()
            },
            panics: vec![("worker", 1)],
            responses: vec![(200, 5), (503, 1)],
            duration_buckets: vec![(0.1, 4), (f64::INFINITY, 6)],
            duration_sum: 0.25,
            duration_count: 6,
            retries: 1,
            rejections: vec![("queue_timeout", 2)],
            refused: vec![("denied", 1), ("rate_limited", 0)],
            bans: vec![("192.0.2.7".parse().unwrap(), 12)],
            backends: vec![(snapshot("a\"b\\c\nd:1"), f64::INFINITY)],
        }
    }

    #[test]
    fn json_strings_and_numbers_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "q\"b\\n\n\t\u{0}<é>\u{2028}");
        assert_eq!(s, r#""q\"b\\n\n\t\u0000\u003cé\u003e\u2028""#);
        assert_eq!(json(&s), "q\"b\\n\n\t\u{0}<é>\u{2028}");
        for (x, text) in [
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
            (1.0, "1"),
            (0.25, "0.25"),
        ] {
            let mut s = String::new();
            json_f64(&mut s, x);
            assert_eq!(s, text);
        }
    }

    #[test]
    fn status_json_is_valid_and_complete() {
        let text = status_json(&view());
        let v = json(&text);
        assert_eq!(v["uptime_s"], 1.5);
        assert!(v["requests_per_s"].is_null(), "NaN becomes null");
        assert_eq!(v["queue_depth"], 3);
        assert_eq!(v["front"]["workers_busy"], 2);
        assert_eq!(v["front"]["answers_flushing"], 4);
        assert_eq!(v["buffers"]["file_bytes"], 4096);
        assert_eq!(v["thread_panics"]["worker"], 1);
        assert_eq!(v["responses_total"], 6);
        assert_eq!(v["responses"]["503"], 1);
        assert_eq!(v["request_duration"]["count"], 6);
        assert_eq!(v["rejections"]["queue_timeout"], 2);
        assert_eq!(v["filter"]["refused"]["denied"], 1);
        assert_eq!(v["filter"]["bans"][0]["client"], "192.0.2.7");
        assert_eq!(v["filter"]["bans"][0]["seconds_left"], 12);
        let b = &v["backends"][0];
        assert_eq!(b["name"], "a\"b\\c\nd:1");
        assert_eq!(b["last_error"], "health check: \"bad\"\n\u{1}<x>");
        assert!(b["latency_ms"].is_null() && b["share"].is_null());
        assert_eq!(b["effective_weight"], 1.5);
        assert_eq!(b["requests"], 10);
    }

    #[test]
    fn metrics_escape_labels_and_end_histograms_with_inf() {
        let text = metrics_text(&view());
        assert!(text.contains("lb_backend_requests_total{backend=\"a\\\"b\\\\c\\nd:1\"} 10\n"));
        assert!(
            !text.contains("lb_backend_latency_ewma_seconds{"),
            "absent until measured"
        );
        assert!(text.contains("lb_backend_share{backend=\"a\\\"b\\\\c\\nd:1\"} +Inf\n"));
        assert!(text.contains("lb_request_duration_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(text.contains("lb_request_duration_seconds_count 6\n"));
        assert!(text.contains("lb_responses_total{code=\"503\"} 1\n"));
        assert!(text.contains("lb_bans_active 1\n"));
        assert!(text.contains("lb_requests_per_second NaN\n"));
        assert!(text.contains("# TYPE lb_request_duration_seconds histogram\n"));
        assert_eq!(label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn token_checks() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cretX", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"S3cret", b"s3cret"));
        assert!(authorized("s3cret", Some("Bearer s3cret"), ""));
        assert!(authorized("s3cret", Some("bearer  s3cret "), ""));
        assert!(!authorized("s3cret", Some("Basic s3cret"), ""));
        assert!(!authorized("s3cret", Some("Bearer s3cre"), ""));
        assert!(authorized("s3cret", None, "a=1&token=s3cret"));
        assert!(authorized("a b&c", None, "token=a+b%26c"));
        assert!(!authorized("s3cret", None, "tokens=s3cret"));
        assert!(!authorized("s3cret", None, ""));
        assert_eq!(percent_decode("%41%4a%zz%4"), b"AJ%zz%4");
    }

    fn get(shared: &Shared, method: &str, target: &str, auth: Option<&str>) -> AdminResponse {
        handle(
            shared,
            &AdminRequest {
                method: method.into(),
                target: target.into(),
                authorization: auth.map(str::to_string),
            },
        )
    }

    #[test]
    fn routes_methods_and_tokens() {
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            admin: None,
            access_log: false,
            backends: vec![BackendConfig::parse("http://127.0.0.1:9", 1).unwrap()],
            ..Config::default()
        };
        config.health.enabled = false;
        let running = Balancer::start(config).expect("start");
        let shared = running.shared();
        let r = get(shared, "GET", "/status", None);
        assert_eq!((r.status, r.content_type), (200, "application/json"));
        let v = json(std::str::from_utf8(&r.body).unwrap());
        assert_eq!(v["backends"][0]["name"], "127.0.0.1:9");
        assert_eq!(v["backends"][0]["state"], "healthy");
        let r = get(shared, "GET", "/metrics", None);
        assert!(r.content_type.starts_with("text/plain; version=0.0.4"));
        let r = get(shared, "GET", "/", None);
        assert!(r.content_type.starts_with("text/html"));
        assert_eq!(get(shared, "HEAD", "/", None).status, 200);
        assert_eq!(get(shared, "GET", "/nope", None).status, 404);
        let r = get(shared, "POST", "/status", None);
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("Allow", "GET, HEAD".into())));

        // Readiness follows the threads the balancer needs: one that is gone makes it 503.
        assert_eq!(get(shared, "GET", "/health", None).status, 200);
        shared.threads.write().push(("test", Box::new(|| false)));
        let r = get(shared, "GET", "/health", None);
        assert_eq!(r.status, 503);
        assert!(String::from_utf8_lossy(&r.body).contains("the test thread is not running"));
        shared.threads.write().pop();

        shared.config.write().admin_token = Some("s3cret".into());
        let r = get(shared, "GET", "/status", None);
        assert_eq!(r.status, 401);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "WWW-Authenticate" && v.starts_with("Bearer")));
        assert_eq!(get(shared, "GET", "/nope", None).status, 401);
        assert_eq!(
            get(shared, "GET", "/status", Some("Bearer s3cret")).status,
            200
        );
        assert_eq!(get(shared, "GET", "/?token=s3cret", None).status, 200);
        assert_eq!(get(shared, "GET", "/status?token=nope", None).status, 401);
        running.shutdown();
    }
}
