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
//! snapshots ([`crate::balance::backend::Snapshot`]), balancer-wide counters ([`crate::metrics::Metrics`])
//! and the filter's counters and bans. The JSON is written by serde (`json.rs` declares its
//! shape), the Prometheus text by hand (see [`label_value`] for its escaping rules).
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /` | the dashboard: HTML + CSS + a little JavaScript that fetches `/status` every second |
//! | `GET /status` | JSON, `application/json` |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /health` | readiness of the balancer itself: `200 ok` while a backend can take traffic, `503` and the reason otherwise; no token needed |
//! | any other path | 404 |
//! | a method other than GET or HEAD | 405 with `Allow: GET, HEAD` |
//!
//! This file holds the routes ([`handle`]); beside it: `auth.rs` (the token and its
//! constant-time comparison), `readiness.rs` (what `/health` checks), `view.rs` (the snapshot
//! every page is built from), `json.rs` (`/status`), `prometheus.rs` (`/metrics`) and
//! `dashboard.html` (`/`).

mod auth;
mod json;
mod prometheus;
mod readiness;
mod view;

pub use json::status_json;
pub use prometheus::{label_value, metrics_text};
pub use view::View;

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
    /// The target's path ([`RequestHead::path`](crate::http::RequestHead::path)).
    pub path: String,
    /// The target's query, `""` when there is none.
    pub query: String,
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
    let (path, query) = (request.path.as_str(), request.query.as_str());
    // Readiness probes (a load balancer in front, systemd, Kubernetes) seldom carry a secret,
    // and the answer reveals no more than "ready or not", so /health needs no token.
    if path == "/health" && (request.method == "GET" || request.method == "HEAD") {
        let answer = match readiness::check(shared) {
            Ok(()) => AdminResponse::text(200, "ok"),
            Err(why) => AdminResponse::text(503, &format!("not ready: {why}")),
        };
        return answer.header("Cache-Control", "no-store");
    }
    let token = shared.config.read().admin_token.clone();
    if let Some(token) = token {
        if !auth::authorized(&token, request.authorization.as_deref(), query) {
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
#[cfg(test)]
mod tests {
    use super::json::tests::json;
    use super::*;
    use crate::config::BackendConfig;
    use crate::{Balancer, Config};

    fn get(shared: &Shared, method: &str, target: &str, auth: Option<&str>) -> AdminResponse {
        handle(
            shared,
            &AdminRequest {
                method: method.into(),
                path: target.split_once('?').map_or(target, |(p, _)| p).into(),
                query: target.split_once('?').map_or("", |(_, q)| q).into(),
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
