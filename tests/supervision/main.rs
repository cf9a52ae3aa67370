//! Supervision: a panic in a long-lived thread is survived (logged, counted, state consistent)
//! or ends the process with status 70; never a thread gone quietly (see src/supervise.rs).
//!
//! Panics are injected through `supervise::inject`, which is process-wide: this is a test
//! binary of its own, and its in-process scenarios run one after another in one test.

#[path = "../support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loadbalancer::supervise::{self, Thread};
use support::{reply, wait_until, Backend, Client, Lb, LbProcess, TempDir};

fn panics_of(kind: &str) -> u64 {
    supervise::panics()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| n)
}

#[test]
fn survivable_panics_leave_every_thread_serving() {
    let backend = Backend::start(|_, out| reply(out, 200, &[], b"ok"));
    let logs = TempDir::new("supervised-log");
    let access_log = logs.path().join("access.log");
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.access_log = true;
        c.access_log_path = Some(access_log.clone());
        c.workers = 1;
        c.health.enabled = true;
        c.health.interval = Duration::from_millis(100);
        c.health.timeout = Duration::from_millis(500);
    });
    let health_checks = || {
        backend
            .requests()
            .iter()
            .filter(|r| r.target == "/health")
            .count()
    };

    // A worker: its request's connection closes, and the one worker serves the next request.
    supervise::inject(Thread::Worker);
    let mut client = Client::connect(lb.addr);
    client.send(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(client.rest_until_closed(Duration::from_secs(5)).is_empty());
    wait_until("the worker's panic counted", Duration::from_secs(5), || {
        panics_of("worker") == 1
    });
    assert_eq!(support::get(lb.addr, "/after-worker").status, 200);

    // The admission checks on the poller: that request gets 500, the next one is served.
    supervise::inject(Thread::Admission);
    assert_eq!(support::get(lb.addr, "/boom").status, 500);
    assert_eq!(panics_of("admission"), 1);
    assert_eq!(support::get(lb.addr, "/after-admission").status, 200);

    // A health check: it counts as failed, and the backend is checked again. The maintenance
    // tick: the next ticks run. Either way health checks go on.
    for (kind, label) in [
        (Thread::HealthCheck, "health_check"),
        (Thread::Maintenance, "maintenance"),
    ] {
        supervise::inject(kind);
        wait_until(
            &format!("the injected {label} panic"),
            Duration::from_secs(10),
            || panics_of(label) == 1,
        );
        let seen = health_checks();
        wait_until("checks after the panic", Duration::from_secs(10), || {
            health_checks() >= seen + 2
        });
    }

    // The log writer: the pass is lost (its lines counted as dropped), the next one writes.
    supervise::inject(Thread::LogWriter);
    wait_until("the log writer's panic", Duration::from_secs(10), || {
        panics_of("log_writer") == 1
    });
    assert_eq!(support::get(lb.addr, "/after-log-writer").status, 200);
    support::wait_for_line(&access_log, "GET /after-log-writer 200", 1);

    // Every thread the balancer needs still runs.
    let shared = lb.running().shared();
    assert!(shared.threads.read().iter().all(|(_, alive)| alive()));
    assert_eq!(support::get(lb.addr, "/at-the-end").status, 200);
}

/// Runs the binary with `LOADBALANCER_INJECT_PANIC=kind` until it exits (10 s at most), after
/// `poke` once it listens; returns its exit code and stderr.
fn run_with_panic(kind: &str, poke: impl FnOnce(&LbProcess)) -> (Option<i32>, String) {
    std::env::set_var("LOADBALANCER_INJECT_PANIC", kind);
    let backend = Backend::answering("ok");
    let mut lb = LbProcess::spawn(&[backend.url()], &[]);
    std::env::remove_var("LOADBALANCER_INJECT_PANIC");
    poke(&lb);
    let status = lb.wait_exit(Duration::from_secs(10));
    (status.code(), lb.stderr())
}

#[test]
fn a_panic_of_the_poller_or_the_signal_thread_ends_the_process_with_70() {
    // The poller panics at its first pass: the process ends before it can serve.
    let dir = TempDir::new("poller-panic");
    let conf = dir.path().join("lb.conf");
    std::fs::write(&conf, "backend http://127.0.0.1:9\nhealth off\n").unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--admin", "off"])
        .env("LOADBALANCER_INJECT_PANIC", "poller")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("worker-poller panicked"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The signal thread panics on the first signal: SIGHUP ends the process instead of a reload.
    let (code, stderr) = run_with_panic("signals", |lb| lb.signal("HUP"));
    assert_eq!(code, Some(70), "{stderr}");
    assert!(stderr.contains("thread signals panicked"), "{stderr}");
}
