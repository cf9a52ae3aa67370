//! `/metrics`: the [`View`] in the Prometheus text format 0.0.4, written by hand. Label values
//! are escaped by [`label_value`]; the metric names are listed in the README's "Metrics" section.

use std::fmt::Write as _;

use super::view::{round, View};
use crate::balance::backend::Snapshot;
use crate::filter::shared::SharedStats;
use crate::http::TunnelEnd;
use crate::metrics::tunnel_end_label;

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

/// Writes one sample of family `name` per count, labelled `label="KEY"`.
fn by_label(o: &mut String, name: &str, label: &str, counts: &[(&'static str, u64)]) {
    for (key, n) in counts {
        let _ = writeln!(o, "{name}{{{label}=\"{}\"}} {n}", label_value(key));
    }
}

/// Writes `# HELP` and `# TYPE` for one family.
fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// The tunnel families: open now, ended by how, bytes each way.
fn tunnels(o: &mut String, v: &View) {
    let f = &v.front;
    family(
        o,
        "lb_tunnels_open",
        "gauge",
        "Tunnels (WebSockets after 101 Switching Protocols) open now, the poller relaying them.",
    );
    let _ = writeln!(o, "lb_tunnels_open {}", f.tunnels_open);
    family(
        o,
        "lb_tunnels_total",
        "counter",
        "Tunnels ended, by how: client or backend (whose FIN came first, or who reset), idle (timeouts tunnel=), shutdown (the drain ended), error.",
    );
    let ended: Vec<(&'static str, u64)> = TunnelEnd::ALL
        .iter()
        .zip(f.tunnels_ended)
        .map(|(how, n)| (tunnel_end_label(*how), n))
        .collect();
    by_label(o, "lb_tunnels_total", "end", &ended);
    family(
        o,
        "lb_tunnel_bytes_total",
        "counter",
        "Bytes relayed by tunnels: up from clients to backends, down from backends to clients.",
    );
    let _ = writeln!(
        o,
        "lb_tunnel_bytes_total{{direction=\"up\"}} {}",
        f.tunnel_bytes_up
    );
    let _ = writeln!(
        o,
        "lb_tunnel_bytes_total{{direction=\"down\"}} {}",
        f.tunnel_bytes_down
    );
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
        "Response body bytes relayed from the backend to clients (a tunnel's when it ends).",
        &|b| Some(b.bytes_out.to_string()),
    );
    per_backend(
        &mut o,
        "lb_backend_tunnels_open",
        "gauge",
        "Tunnels (WebSockets) open to the backend now.",
        &|b| Some(b.tunnels.to_string()),
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
        "lb_retries_refused_total",
        "counter",
        "Requests that could have been retried and were not, by why: budget (the retry budget was spent).",
    );
    by_label(
        &mut o,
        "lb_retries_refused_total",
        "why",
        &[("budget", v.retry_budget.refused)],
    );
    family(
        &mut o,
        "lb_retry_budget_balance",
        "gauge",
        "Retries the budget allows now: 100 per 10 s plus budget= % of the last 10 s of requests, less the retries made in them.",
    );
    let _ = writeln!(o, "lb_retry_budget_balance {}", v.retry_budget.balance);
    family(
        &mut o,
        "lb_rejections_total",
        "counter",
        "Requests the balancer answered itself without asking a backend, by reason.",
    );
    by_label(&mut o, "lb_rejections_total", "reason", &v.rejections);
    family(
        &mut o,
        "lb_filtered_total",
        "counter",
        "Requests refused by the filter (deny/allow lists, rate limits, bans, request rules), by reason.",
    );
    by_label(&mut o, "lb_filtered_total", "reason", &v.refused);
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
        "lb_poller_longest_iteration_seconds",
        "gauge",
        "The longest pass of the poller's loop over its events and timers in about the last minute: every client waits while it runs.",
    );
    let _ = writeln!(
        o,
        "lb_poller_longest_iteration_seconds {}",
        v.front.poller_longest_iteration_us as f64 / 1e6
    );
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
    tunnels(&mut o, v);
    family(
        &mut o,
        "lb_thread_panics_total",
        "counter",
        "Panics of long-lived threads, by kind (see supervise.rs: each survives or ends the process).",
    );
    by_label(&mut o, "lb_thread_panics_total", "thread", &v.panics);
    family(
        &mut o,
        "lb_log_lines_dropped_total",
        "counter",
        "Log lines dropped: the queue to the log writer was full, or the sink refused them.",
    );
    by_label(
        &mut o,
        "lb_log_lines_dropped_total",
        "reason",
        &v.log_lines_dropped,
    );
    family(
        &mut o,
        "lb_bans_active",
        "gauge",
        "Clients banned right now.",
    );
    let _ = writeln!(o, "lb_bans_active {}", v.bans.len());
    if let Some(shared) = &v.shared {
        shared_metrics(&mut o, shared);
    }
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

/// The shared store's families (only with a `shared` line).
fn shared_metrics(o: &mut String, s: &SharedStats) {
    family(
        o,
        "lb_shared_calls_total",
        "counter",
        "Round trips to the shared store (Redis), by result: ok, timeout (unknown whether Redis ran it), error.",
    );
    by_label(o, "lb_shared_calls_total", "result", &s.calls);
    family(
        o,
        "lb_shared_fallback",
        "gauge",
        "1 while shared limits are decided by the fallback because Redis does not answer, else 0.",
    );
    let _ = writeln!(o, "lb_shared_fallback {}", u8::from(s.fallback));
    family(
        o,
        "lb_shared_connected",
        "gauge",
        "1 while a connection to the shared store is open, else 0.",
    );
    let _ = writeln!(o, "lb_shared_connected {}", u8::from(s.connected));
    family(
        o,
        "lb_shared_instances",
        "gauge",
        "Balancers sharing the limits (the local fallback limits each at rate/N).",
    );
    let _ = writeln!(o, "lb_shared_instances {}", s.instances);
    family(
        o,
        "lb_shared_rtt_seconds",
        "histogram",
        "Round-trip time of the shared store's answered calls (a pipeline of checks is one call).",
    );
    for (le, n) in &s.rtt_buckets {
        let _ = writeln!(
            o,
            "lb_shared_rtt_seconds_bucket{{le=\"{}\"}} {n}",
            prom_f64(*le)
        );
    }
    let _ = writeln!(o, "lb_shared_rtt_seconds_sum {}", prom_f64(s.rtt_sum));
    let _ = writeln!(o, "lb_shared_rtt_seconds_count {}", s.rtt_count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::view::fixtures::view;

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
        assert!(text.contains("lb_retries_refused_total{why=\"budget\"} 2\n"));
        assert!(text.contains("lb_retry_budget_balance 105\n"));
        assert!(text.contains("lb_log_lines_dropped_total{reason=\"queue_full\"} 7\n"));
        assert!(text.contains("lb_requests_per_second NaN\n"));
        assert!(text.contains("# TYPE lb_request_duration_seconds histogram\n"));
        assert_eq!(label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert!(text.contains("lb_shared_calls_total{result=\"timeout\"} 3\n"));
        assert!(text.contains("lb_shared_fallback 1\n"));
        assert!(text.contains("# TYPE lb_shared_rtt_seconds histogram\n"));
        assert!(text.contains("lb_shared_rtt_seconds_bucket{le=\"+Inf\"} 7\n"));
        assert!(text.contains("lb_shared_rtt_seconds_count 7\n"));
        assert!(!metrics_text(&View::default()).contains("lb_shared_"));
    }
}
