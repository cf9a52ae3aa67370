//! `/status`: the [`View`] as one JSON document, written by serde. The types below are the
//! document's shape (field names are stable; see docs/OPERATIONS.md, "/status fields"), beside
//! the view's own types that serialise as they are (`FrontStats`, `BufferStats`, `BudgetState`,
//! `Decision`). Numbers that are not finite are written `null` (JSON has no NaN or infinity);
//! measured values are rounded as the dashboard shows them.

use serde::{Serialize, Serializer};

use super::view::{round, View};
use crate::balance::backend::Snapshot;
use crate::balance::retry::BudgetState;
use crate::explain::Decision;
use crate::filter::shared::SharedStats;
use crate::http::{BufferStats, FrontStats, TunnelEnd};
use crate::metrics::tunnel_end_label;

/// The `/status` document.
#[derive(Serialize)]
struct Status<'a> {
    uptime_s: f64,
    requests_per_s: f64,
    queue_depth: usize,
    front: &'a FrontStats,
    tunnels: Tunnels,
    buffers: &'a BufferStats,
    #[serde(serialize_with = "counts")]
    thread_panics: &'a [(&'static str, u64)],
    #[serde(serialize_with = "counts")]
    log_lines_dropped: &'a [(&'static str, u64)],
    responses_total: u64,
    retries: u64,
    retry_budget: &'a BudgetState,
    /// By status code: `{"200": 5, "503": 1}`.
    #[serde(serialize_with = "counts")]
    responses: &'a [(u16, u64)],
    request_duration: RequestDuration,
    #[serde(serialize_with = "counts")]
    rejections: &'a [(&'static str, u64)],
    filter: Filter<'a>,
    backends: Vec<Backend<'a>>,
    explain: bool,
    decisions: &'a [Decision],
    /// `null` without a `shared` line.
    shared: Option<Shared<'a>>,
}

/// `tunnels`: open now, bytes each way, ended by how.
#[derive(Serialize)]
struct Tunnels {
    open: usize,
    bytes_up: u64,
    bytes_down: u64,
    #[serde(serialize_with = "counts")]
    ended: Vec<(&'static str, u64)>,
}

/// `request_duration`: requests timed, their total and their mean (`null` before the first).
#[derive(Serialize)]
struct RequestDuration {
    count: u64,
    sum_s: f64,
    mean_ms: Option<f64>,
}

/// `filter`: requests refused by reason, and the clients banned now.
#[derive(Serialize)]
struct Filter<'a> {
    #[serde(serialize_with = "counts")]
    refused: &'a [(&'static str, u64)],
    bans: Vec<Ban>,
}

/// An item of `filter.bans`.
#[derive(Serialize)]
struct Ban {
    client: String,
    seconds_left: u64,
}

/// An item of `backends`: its [`Snapshot`] with its share of the last minute's attempts.
#[derive(Serialize)]
struct Backend<'a> {
    id: u64,
    name: &'a str,
    url: &'a str,
    state: &'static str,
    healthy: bool,
    breaker: &'static str,
    weight: u32,
    effective_weight: f64,
    latency_ms: Option<f64>,
    failure_rate: f64,
    in_flight: u64,
    tunnels: u64,
    requests: u64,
    failures: u64,
    bytes_out: u64,
    share: f64,
    last_error: Option<&'a str>,
}

/// `shared`: the shared store, its URL's password hidden.
#[derive(Serialize)]
struct Shared<'a> {
    redis: &'a str,
    connected: bool,
    fallback: bool,
    fallback_mode: &'static str,
    instances: u32,
    last_error: Option<&'a str>,
    rtt_p50_ms: Option<f64>,
    rtt_p99_ms: Option<f64>,
    #[serde(serialize_with = "counts")]
    calls: &'a [(&'static str, u64)],
}

/// Writes `[(label, count), ...]` as the object `{"label": count, ...}`, in order.
fn counts<K: Serialize, S: Serializer>(counts: &[(K, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(counts.iter().map(|(label, n)| (label, n)))
}

/// The `/status` document. Field names are stable; see docs/OPERATIONS.md, "/status fields".
pub fn status_json(v: &View) -> String {
    let status = Status {
        uptime_s: round(v.uptime.as_secs_f64(), 3),
        requests_per_s: round(v.requests_per_s, 3),
        queue_depth: v.queue_depth,
        front: &v.front,
        tunnels: Tunnels {
            open: v.front.tunnels_open,
            bytes_up: v.front.tunnel_bytes_up,
            bytes_down: v.front.tunnel_bytes_down,
            ended: TunnelEnd::ALL
                .iter()
                .zip(v.front.tunnels_ended)
                .map(|(how, n)| (tunnel_end_label(*how), n))
                .collect(),
        },
        buffers: &v.buffers,
        thread_panics: &v.panics,
        log_lines_dropped: &v.log_lines_dropped,
        responses_total: v.responses.iter().map(|(_, n)| n).sum(),
        retries: v.retries,
        retry_budget: &v.retry_budget,
        responses: &v.responses,
        request_duration: RequestDuration {
            count: v.duration_count,
            sum_s: round(v.duration_sum, 6),
            mean_ms: (v.duration_count > 0)
                .then(|| round(v.duration_sum * 1000.0 / v.duration_count as f64, 3)),
        },
        rejections: &v.rejections,
        filter: Filter {
            refused: &v.refused,
            bans: (v.bans.iter())
                .map(|(ip, left)| Ban {
                    client: ip.to_string(),
                    seconds_left: *left,
                })
                .collect(),
        },
        backends: v
            .backends
            .iter()
            .map(|(b, share)| backend(b, *share))
            .collect(),
        explain: v.explain,
        decisions: &v.decisions,
        shared: v.shared.as_ref().map(shared),
    };
    // Every field serialises, and a String takes anything written into it.
    let mut text = serde_json::to_string(&status).unwrap_or_default();
    text.push('\n');
    text
}

/// A backend as `/status` lists it.
fn backend(b: &Snapshot, share: f64) -> Backend<'_> {
    Backend {
        id: b.id,
        name: &b.name,
        url: &b.url,
        state: b.state,
        healthy: b.healthy,
        breaker: b.breaker,
        weight: b.weight,
        effective_weight: round(b.effective_weight, 3),
        latency_ms: b.latency_ms.map(|ms| round(ms, 3)),
        failure_rate: round(b.failure_rate, 4),
        in_flight: b.in_flight,
        tunnels: b.tunnels,
        requests: b.requests,
        failures: b.failures,
        bytes_out: b.bytes_out,
        share: round(share, 4),
        last_error: b.last_error.as_deref(),
    }
}

/// The shared store as `/status` shows it.
fn shared(s: &SharedStats) -> Shared<'_> {
    Shared {
        redis: &s.redis,
        connected: s.connected,
        fallback: s.fallback,
        fallback_mode: s.fallback_mode,
        instances: s.instances,
        last_error: s.last_error.as_deref(),
        rtt_p50_ms: s.rtt_p50_ms.map(|ms| round(ms, 3)),
        rtt_p99_ms: s.rtt_p99_ms.map(|ms| round(ms, 3)),
        calls: &s.calls,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::admin::view::fixtures::view;

    /// Parses `s`, failing the test with the text when it is not JSON.
    pub(in crate::admin) fn json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON ({e}): {s}"))
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
        assert_eq!(v["log_lines_dropped"]["queue_full"], 7);
        assert_eq!(v["responses_total"], 6);
        assert_eq!(v["responses"]["503"], 1);
        assert_eq!(v["request_duration"]["count"], 6);
        assert_eq!(v["rejections"]["queue_timeout"], 2);
        let rb = &v["retry_budget"];
        assert_eq!(
            (rb["percent"].as_u64(), rb["balance"].as_u64()),
            (Some(20), Some(105))
        );
        assert_eq!(
            (
                rb["window_requests"].as_u64(),
                rb["window_retries"].as_u64()
            ),
            (Some(30), Some(1))
        );
        assert_eq!(rb["refused"], 2);
        assert_eq!(v["filter"]["refused"]["denied"], 1);
        assert_eq!(v["filter"]["bans"][0]["client"], "192.0.2.7");
        assert_eq!(v["filter"]["bans"][0]["seconds_left"], 12);
        let b = &v["backends"][0];
        assert_eq!(b["name"], "a\"b\\c\nd:1");
        assert_eq!(b["last_error"], "health check: \"bad\"\n\u{1}<x>");
        assert!(b["latency_ms"].is_null() && b["share"].is_null());
        assert_eq!(b["effective_weight"], 1.5);
        assert_eq!(b["requests"], 10);
        assert_eq!(v["explain"], true);
        let d = &v["decisions"][0];
        assert_eq!(
            (d["at_ms"].as_u64(), d["status"].as_u64()),
            (Some(1_700_000_000_000), Some(200))
        );
        assert_eq!(
            (d["method"].as_str(), d["target"].as_str()),
            (Some("GET"), Some("/<x>\""))
        );
        assert_eq!(d["line"], "pick=a:1; cw=a:1:1>0");
        let s = &v["shared"];
        assert_eq!(s["redis"], "redis://:********@127.0.0.1:6379/0");
        assert_eq!(
            (s["connected"].as_bool(), s["fallback"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(
            (s["fallback_mode"].as_str(), s["instances"].as_u64()),
            (Some("local"), Some(2))
        );
        assert_eq!(s["last_error"], "no answer in time \"x\"");
        assert_eq!(s["rtt_p50_ms"], 0.25);
        assert!(s["rtt_p99_ms"].is_null());
        assert_eq!(s["calls"]["timeout"], 3);
        let none = status_json(&View::default());
        assert!(json(&none)["shared"].is_null());
    }
}
