//! `/status`: the [`View`] as one JSON document, written by hand (no serialisation dependency).
//! Strings are escaped by [`json_str`], numbers by [`json_f64`].

use std::fmt::Write as _;

use super::view::{round, View};
use crate::filter::shared::SharedStats;
use crate::http::TunnelEnd;
use crate::metrics::tunnel_end_label;

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
         \"backpressure_waits\":{},\"stalled_readers_closed\":{},\
         \"poller_longest_iteration_us\":{}}}",
        f.workers_busy,
        f.bodies_buffering,
        f.answers_flushing,
        f.backpressure_waits,
        f.stalled_readers_closed,
        f.poller_longest_iteration_us
    );
    let _ = write!(
        o,
        ",\"tunnels\":{{\"open\":{},\"bytes_up\":{},\"bytes_down\":{},\"ended\":",
        f.tunnels_open, f.tunnel_bytes_up, f.tunnel_bytes_down
    );
    let ended: Vec<(&str, u64)> = TunnelEnd::ALL
        .iter()
        .zip(f.tunnels_ended)
        .map(|(how, n)| (tunnel_end_label(*how), n))
        .collect();
    json_counts(&mut o, &ended);
    o.push('}');
    let _ = write!(
        o,
        ",\"buffers\":{{\"memory_bytes\":{},\"file_bytes\":{},\"spilled\":{},\"full\":{}}}",
        b.memory_bytes, b.file_bytes, b.spilled, b.full
    );
    o.push_str(",\"thread_panics\":");
    json_counts(&mut o, &v.panics);
    o.push_str(",\"log_lines_dropped\":");
    json_counts(&mut o, &v.log_lines_dropped);
    let total: u64 = v.responses.iter().map(|(_, n)| n).sum();
    let _ = write!(o, ",\"responses_total\":{total}");
    let _ = write!(o, ",\"retries\":{}", v.retries);
    let rb = &v.retry_budget;
    let _ = write!(
        o,
        ",\"retry_budget\":{{\"percent\":{},\"balance\":{},\"window_requests\":{},\
         \"window_retries\":{},\"refused\":{}}}",
        rb.percent, rb.balance, rb.requests, rb.retries, rb.refused
    );
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
            ",\"in_flight\":{},\"tunnels\":{},\"requests\":{},\"failures\":{},\"bytes_out\":{},\
             \"share\":",
            b.in_flight, b.tunnels, b.requests, b.failures, b.bytes_out
        );
        json_f64(&mut o, round(*share, 4));
        o.push_str(",\"last_error\":");
        match &b.last_error {
            Some(e) => json_str(&mut o, e),
            None => o.push_str("null"),
        }
        o.push('}');
    }
    let _ = write!(o, "],\"explain\":{},\"decisions\":[", v.explain);
    for (i, d) in v.decisions.iter().enumerate() {
        o.push_str(if i > 0 { ",{" } else { "{" });
        let _ = write!(o, "\"at_ms\":{},\"status\":{}", d.at_ms, d.status);
        for (name, text) in [
            ("method", &d.method),
            ("target", &d.target),
            ("line", &d.line),
        ] {
            let _ = write!(o, ",\"{name}\":");
            json_str(&mut o, text);
        }
        o.push('}');
    }
    o.push_str("],\"shared\":");
    json_shared(&mut o, v.shared.as_ref());
    o.push_str("}\n");
    o
}

/// The `shared` object (`null` without a `shared` line). The URL's password is hidden.
fn json_shared(o: &mut String, shared: Option<&SharedStats>) {
    let Some(s) = shared else {
        o.push_str("null");
        return;
    };
    o.push_str("{\"redis\":");
    json_str(o, &s.redis);
    let _ = write!(
        o,
        ",\"connected\":{},\"fallback\":{},\"fallback_mode\":",
        s.connected, s.fallback
    );
    json_str(o, s.fallback_mode);
    let _ = write!(o, ",\"instances\":{},\"last_error\":", s.instances);
    match &s.last_error {
        Some(e) => json_str(o, e),
        None => o.push_str("null"),
    }
    for (name, ms) in [("rtt_p50_ms", s.rtt_p50_ms), ("rtt_p99_ms", s.rtt_p99_ms)] {
        let _ = write!(o, ",\"{name}\":");
        match ms {
            Some(ms) => json_f64(o, round(ms, 3)),
            None => o.push_str("null"),
        }
    }
    o.push_str(",\"calls\":");
    json_counts(o, &s.calls);
    o.push('}');
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::admin::view::fixtures::view;

    /// Parses `s`, failing the test with the text when it is not JSON.
    pub(in crate::admin) fn json(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON ({e}): {s}"))
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
