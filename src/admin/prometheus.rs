//! `/metrics`: the [`View`] in the Prometheus text format 0.0.4, written by hand. Every family
//! is a row of a table below (name, type, help, and how its samples are read from the view), so
//! the page reads as the list of what it shows; label values are escaped by [`label_value`].
//! The metric names are listed in docs/OPERATIONS.md.

use std::fmt::{Display, Write as _};

use super::view::{round, View};
use crate::balance::backend::Snapshot;
use crate::filter::shared::SharedStats;
use crate::http::TunnelEnd;
use crate::metrics::tunnel_end_label;
use Kind::{Counter, Gauge, Histogram};

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

/// A family's `# TYPE`.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name, type and `# HELP` text, and the function that writes its
/// samples from a `T` (the view, a backend with its share, or the shared store).
struct Family<T> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: fn(&T, &mut Samples<'_>),
}

/// Where a family's samples go: the page, the family's name, and the labels every sample of it
/// carries (a backend's, or none).
struct Samples<'o> {
    o: &'o mut String,
    name: &'static str,
    labels: &'o str,
}

impl Samples<'_> {
    /// `name{labels} x`.
    fn value(&mut self, x: impl Display) {
        let (name, labels) = (self.name, self.labels);
        let _ = match labels {
            "" => writeln!(self.o, "{name} {x}"),
            _ => writeln!(self.o, "{name}{{{labels}}} {x}"),
        };
    }

    /// [`Samples::value`] in Prometheus' float syntax.
    fn float(&mut self, x: f64) {
        self.value(prom_f64(x));
    }

    /// One sample per count, labelled `label="KEY"`.
    fn by<K: Display>(&mut self, label: &str, counts: &[(K, u64)]) {
        for (key, n) in counts {
            let name = self.name;
            let key = label_value(&key.to_string());
            let _ = writeln!(self.o, "{name}{{{label}=\"{key}\"}} {n}");
        }
    }

    /// A histogram's cumulative buckets `(le, count)`, then its sum and count.
    fn histogram(&mut self, buckets: &[(f64, u64)], sum: f64, count: u64) {
        let name = self.name;
        for (le, n) in buckets {
            let _ = writeln!(self.o, "{name}_bucket{{le=\"{}\"}} {n}", prom_f64(*le));
        }
        let _ = writeln!(self.o, "{name}_sum {}", prom_f64(sum));
        let _ = writeln!(self.o, "{name}_count {count}");
    }
}

/// Writes `family`'s `# HELP` and `# TYPE`, then its samples from each of `rows`, labelled with
/// the row's labels.
fn write<'r, T: 'r>(
    o: &mut String,
    family: &Family<T>,
    rows: impl IntoIterator<Item = (&'r T, &'r str)>,
) {
    let kind = match family.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    let (name, help) = (family.name, family.help.replace('\\', "\\\\"));
    let _ = writeln!(o, "# HELP {name} {}", help.replace('\n', "\\n"));
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (row, labels) in rows {
        (family.samples)(row, &mut Samples { o, name, labels });
    }
}

/// The `/metrics` page: every family of `BACKEND_FAMILIES` (one sample per backend), of
/// `FAMILIES`, and of `SHARED_FAMILIES` when there is a `shared` line.
///
/// `lb_backend_breaker_state` is one gauge per backend: 0 closed, 1 open, 2 half-open.
pub fn metrics_text(v: &View) -> String {
    let mut o = String::with_capacity(4096 + 1024 * v.backends.len());
    let labels: Vec<String> = (v.backends.iter())
        .map(|(b, _)| format!("backend=\"{}\"", label_value(&b.name)))
        .collect();
    for family in BACKEND_FAMILIES {
        let rows = v.backends.iter().zip(labels.iter().map(String::as_str));
        write(&mut o, family, rows);
    }
    for family in FAMILIES {
        write(&mut o, family, [(v, "")]);
    }
    if let Some(shared) = &v.shared {
        for family in SHARED_FAMILIES {
            write(&mut o, family, [(shared, "")]);
        }
    }
    o
}

/// The families with one sample per backend, labelled `backend="host:port"`.
const BACKEND_FAMILIES: &[Family<(Snapshot, f64)>] = &[
    Family {
        name: "lb_backend_requests_total",
        kind: Counter,
        help: "Attempts sent to the backend (a retry counts once per backend tried).",
        samples: |(b, _), s| s.value(b.requests),
    },
    Family {
        name: "lb_backend_failures_total",
        kind: Counter,
        help: "Attempts that failed: transport error, timeout, or a failure status (502/503/504).",
        samples: |(b, _), s| s.value(b.failures),
    },
    Family {
        name: "lb_backend_in_flight",
        kind: Gauge,
        help: "Requests being forwarded to the backend right now.",
        samples: |(b, _), s| s.value(b.in_flight),
    },
    Family {
        name: "lb_backend_bytes_out_total",
        kind: Counter,
        help: "Response body bytes relayed from the backend to clients (a tunnel's when it ends).",
        samples: |(b, _), s| s.value(b.bytes_out),
    },
    Family {
        name: "lb_backend_tunnels_open",
        kind: Gauge,
        help: "Tunnels (WebSockets) open to the backend now.",
        samples: |(b, _), s| s.value(b.tunnels),
    },
    Family {
        name: "lb_backend_weight",
        kind: Gauge,
        help: "Configured weight.",
        samples: |(b, _), s| s.value(b.weight),
    },
    Family {
        name: "lb_backend_effective_weight",
        kind: Gauge,
        help: "Weight the balancer uses now, in units of the configured weight (latency, failures and slow start lower it).",
        samples: |(b, _), s| s.float(b.effective_weight),
    },
    Family {
        name: "lb_backend_latency_ewma_seconds",
        kind: Gauge,
        help: "Moving average of the time to the response head; absent until measured.",
        samples: |(b, _), s| {
            if let Some(ms) = b.latency_ms {
                s.float(ms / 1000.0);
            }
        },
    },
    Family {
        name: "lb_backend_failure_rate",
        kind: Gauge,
        help: "Moving average of the share of attempts that failed, 0 to 1.",
        samples: |(b, _), s| s.float(b.failure_rate),
    },
    Family {
        name: "lb_backend_healthy",
        kind: Gauge,
        help: "1 when health checks pass (or are off), 0 otherwise.",
        samples: |(b, _), s| s.value(u8::from(b.healthy)),
    },
    Family {
        name: "lb_backend_breaker_state",
        kind: Gauge,
        help: "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        samples: |(b, _), s| {
            s.value(match b.breaker {
                "closed" => 0,
                "open" => 1,
                _ => 2,
            })
        },
    },
    Family {
        name: "lb_backend_share",
        kind: Gauge,
        help: "Share of the attempts over the last minute that went to the backend, 0 to 1.",
        samples: |(_, share), s| s.float(*share),
    },
];

/// The balancer-wide families.
const FAMILIES: &[Family<View>] = &[
    Family {
        name: "lb_responses_total",
        kind: Counter,
        help: "Responses sent to clients, by status code.",
        samples: |v, s| s.by("code", &v.responses),
    },
    Family {
        name: "lb_request_duration_seconds",
        kind: Histogram,
        help: "Time from a request's arrival to the end of its response.",
        samples: |v, s| s.histogram(&v.duration_buckets, v.duration_sum, v.duration_count),
    },
    Family {
        name: "lb_retries_total",
        kind: Counter,
        help: "Extra attempts made on another backend.",
        samples: |v, s| s.value(v.retries),
    },
    Family {
        name: "lb_retries_refused_total",
        kind: Counter,
        help: "Requests that could have been retried and were not, by why: budget (the retry budget was spent).",
        samples: |v, s| s.by("why", &[("budget", v.retry_budget.refused)]),
    },
    Family {
        name: "lb_retry_budget_balance",
        kind: Gauge,
        help: "Retries the budget allows now: 100 per 10 s plus budget= % of the last 10 s of requests, less the retries made in them.",
        samples: |v, s| s.value(v.retry_budget.balance),
    },
    Family {
        name: "lb_rejections_total",
        kind: Counter,
        help: "Requests the balancer answered itself without asking a backend, by reason.",
        samples: |v, s| s.by("reason", &v.rejections),
    },
    Family {
        name: "lb_filtered_total",
        kind: Counter,
        help: "Requests refused by the filter (deny/allow lists, rate limits, bans, request rules), by reason.",
        samples: |v, s| s.by("reason", &v.refused),
    },
    Family {
        name: "lb_queue_depth",
        kind: Gauge,
        help: "Requests waiting for a worker.",
        samples: |v, s| s.value(v.queue_depth),
    },
    Family {
        name: "lb_workers_busy",
        kind: Gauge,
        help: "Workers answering a request now (the rest wait for one).",
        samples: |v, s| s.value(v.front.workers_busy),
    },
    Family {
        name: "lb_poller_longest_iteration_seconds",
        kind: Gauge,
        help: "The longest pass of the poller's loop over its events and timers in about the last minute: every client waits while it runs.",
        samples: |v, s| s.float(v.front.poller_longest_iteration_us as f64 / 1e6),
    },
    Family {
        name: "lb_slow_client_connections",
        kind: Gauge,
        help: "Connections waiting on a client, not on a worker: request bodies being buffered (upload), answers being finished (download).",
        samples: |v, s| {
            let waiting = [
                ("upload", v.front.bodies_buffering as u64),
                ("download", v.front.answers_flushing as u64),
            ];
            s.by("waiting", &waiting);
        },
    },
    Family {
        name: "lb_buffer_bytes",
        kind: Gauge,
        help: "Bytes held for slow clients, in memory and in temporary files.",
        samples: |v, s| {
            let held = [("memory", v.buffers.memory_bytes), ("file", v.buffers.file_bytes)];
            s.by("in", &held);
        },
    },
    Family {
        name: "lb_buffer_spills_total",
        kind: Counter,
        help: "Times a buffer went on into a temporary file.",
        samples: |v, s| s.value(v.buffers.spilled),
    },
    Family {
        name: "lb_buffer_full_total",
        kind: Counter,
        help: "Times a buffer was full (buffers temp_file= or temp_total= reached, or the disk failed).",
        samples: |v, s| s.value(v.buffers.full),
    },
    Family {
        name: "lb_backpressure_waits_total",
        kind: Counter,
        help: "Times a worker waited for a client because the buffers were full.",
        samples: |v, s| s.value(v.front.backpressure_waits),
    },
    Family {
        name: "lb_stalled_readers_closed_total",
        kind: Counter,
        help: "Clients closed for taking nothing of an answer within timeouts client=.",
        samples: |v, s| s.value(v.front.stalled_readers_closed),
    },
    Family {
        name: "lb_tunnels_open",
        kind: Gauge,
        help: "Tunnels (WebSockets after 101 Switching Protocols) open now, the poller relaying them.",
        samples: |v, s| s.value(v.front.tunnels_open),
    },
    Family {
        name: "lb_tunnels_total",
        kind: Counter,
        help: "Tunnels ended, by how: client or backend (whose FIN came first, or who reset), idle (timeouts tunnel=), shutdown (the drain ended), error.",
        samples: |v, s| {
            let ended: Vec<(&str, u64)> = (TunnelEnd::ALL.iter().zip(v.front.tunnels_ended))
                .map(|(how, n)| (tunnel_end_label(*how), n))
                .collect();
            s.by("end", &ended);
        },
    },
    Family {
        name: "lb_tunnel_bytes_total",
        kind: Counter,
        help: "Bytes relayed by tunnels: up from clients to backends, down from backends to clients.",
        samples: |v, s| {
            let bytes = [("up", v.front.tunnel_bytes_up), ("down", v.front.tunnel_bytes_down)];
            s.by("direction", &bytes);
        },
    },
    Family {
        name: "lb_thread_panics_total",
        kind: Counter,
        help: "Panics of long-lived threads, by kind (see supervise.rs: each survives or ends the process).",
        samples: |v, s| s.by("thread", &v.panics),
    },
    Family {
        name: "lb_log_lines_dropped_total",
        kind: Counter,
        help: "Log lines dropped: the queue to the log writer was full, or the sink refused them.",
        samples: |v, s| s.by("reason", &v.log_lines_dropped),
    },
    Family {
        name: "lb_bans_active",
        kind: Gauge,
        help: "Clients banned right now.",
        samples: |v, s| s.value(v.bans.len()),
    },
    Family {
        name: "lb_requests_per_second",
        kind: Gauge,
        help: "Attempts per second over the last minute.",
        samples: |v, s| s.float(v.requests_per_s),
    },
    Family {
        name: "lb_uptime_seconds",
        kind: Gauge,
        help: "Seconds since the balancer started.",
        samples: |v, s| s.float(round(v.uptime.as_secs_f64(), 3)),
    },
];

/// The shared store's families (only with a `shared` line).
const SHARED_FAMILIES: &[Family<SharedStats>] = &[
    Family {
        name: "lb_shared_calls_total",
        kind: Counter,
        help: "Round trips to the shared store (Redis), by result: ok, timeout (unknown whether Redis ran it), error.",
        samples: |shared, s| s.by("result", &shared.calls),
    },
    Family {
        name: "lb_shared_fallback",
        kind: Gauge,
        help: "1 while shared limits are decided by the fallback because Redis does not answer, else 0.",
        samples: |shared, s| s.value(u8::from(shared.fallback)),
    },
    Family {
        name: "lb_shared_connected",
        kind: Gauge,
        help: "1 while a connection to the shared store is open, else 0.",
        samples: |shared, s| s.value(u8::from(shared.connected)),
    },
    Family {
        name: "lb_shared_instances",
        kind: Gauge,
        help: "Balancers sharing the limits (the local fallback limits each at rate/N).",
        samples: |shared, s| s.value(shared.instances),
    },
    Family {
        name: "lb_shared_rtt_seconds",
        kind: Histogram,
        help: "Round-trip time of the shared store's answered calls (a pipeline of checks is one call).",
        samples: |shared, s| s.histogram(&shared.rtt_buckets, shared.rtt_sum, shared.rtt_count),
    },
];

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
