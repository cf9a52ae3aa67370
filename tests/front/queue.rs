//! Waiting for a worker: a request waits up to `timeouts queue=` and then gets 503 with
//! Retry-After; with `queue N` set, a full queue answers 503 at once.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::{reply, wait_until, Backend, Client, Headers, Lb, Response};

/// Blocks backend answers until opened: a backend as slow as the test needs, with no sleeps.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }

    fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }

    fn is_open(&self) -> bool {
        *self.0 .0.lock().unwrap()
    }

    /// A backend whose every answer waits for the gate.
    fn backend(&self) -> Backend {
        let gate = self.clone();
        Backend::start(move |_, out| {
            gate.wait();
            reply(out, 200, &[], b"slow answer")
        })
    }
}

/// What a client thread reports: the request's number, its answer, how long the answer took,
/// and whether the gate was open by then.
type Report = (usize, Response, Duration, bool);

/// Sends `GET /slow/{i}` on a connection of its own, from a thread of its own.
fn send(addr: SocketAddr, i: usize, gate: &Gate, tx: &mpsc::Sender<Report>) -> JoinHandle<()> {
    let (gate, tx) = (gate.clone(), tx.clone());
    thread::spawn(move || {
        let started = Instant::now();
        let r = Client::connect(addr).request(&format!(
            "GET /slow/{i} HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n"
        ));
        let _ = tx.send((i, r, started.elapsed(), gate.is_open()));
    })
}

#[test]
fn full_queue_gets_503_with_retry_after_immediately() {
    let gate = Gate::default();
    let backend = gate.backend();
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.workers = 1;
        c.queue = Some(1);
    });

    // The one worker is busy once the backend holds a request.
    let (tx, rx) = mpsc::channel::<Report>();
    let send = |i: usize| send(lb.addr, i, &gate, &tx);
    let mut clients = vec![send(0)];
    wait_until(
        "the backend to hold the first request",
        Duration::from_secs(10),
        || backend.count() == 1,
    );
    // One more fits in the queue; the rest find it full.
    for i in 1..6 {
        clients.push(send(i));
    }

    let mut busy = Vec::new();
    while busy.len() < 4 {
        let (i, r, took, gate_open) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the requests that found the queue full must be answered at once");
        assert_eq!(
            r.status, 503,
            "request {i} answered {} while the backend was held",
            r.status
        );
        assert!(
            !gate_open,
            "request {i} was answered only after the backend was released"
        );
        assert!(
            took < Duration::from_secs(2),
            "request {i}: 503 after {took:?}"
        );
        assert!(
            r.header("retry-after")
                .is_some_and(|v| v.parse::<u32>().is_ok()),
            "503 without a numeric Retry-After: {:?}",
            r.headers
        );
        assert!(!r.text().trim().is_empty(), "503 without a reason");
        busy.push(i);
    }

    gate.open();
    let mut served = Vec::new();
    for _ in 0..2 {
        let (i, r, _, _) = rx.recv_timeout(Duration::from_secs(10)).expect("answer");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "slow answer"),
            "request {i}"
        );
        served.push(i);
    }
    assert!(
        served.contains(&0),
        "the first request was served: {served:?}"
    );
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        backend.count(),
        2,
        "only the in-flight and the queued request reached the backend"
    );
    assert!(lb.shutdown());
}

#[test]
fn a_request_waits_up_to_the_queue_timeout_then_gets_503() {
    let gate = Gate::default();
    let backend = gate.backend();
    // One worker, stuck on the held request: only the poller can answer the waiting one.
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.workers = 1;
        c.timeouts.queue = Duration::from_millis(500);
    });
    let (tx, rx) = mpsc::channel::<Report>();
    let send = |i: usize| send(lb.addr, i, &gate, &tx);
    let mut clients = vec![send(0)];
    wait_until(
        "the backend to hold request 0",
        Duration::from_secs(10),
        || backend.count() == 1,
    );
    clients.push(send(1));
    let (i, r, took, _) = rx.recv_timeout(Duration::from_secs(10)).expect("an answer");
    assert_eq!((i, r.status), (1, 503), "{}", r.text());
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert!(r.text().contains("queue timeout"), "{}", r.text());
    assert!(
        took >= Duration::from_millis(450),
        "503 after {took:?}: too early"
    );
    assert!(
        took < Duration::from_secs(3),
        "503 after {took:?}: too late"
    );

    // A request that gets its worker within the timeout waits for it and is served.
    clients.push(send(2));
    // Deliberately less than the queue timeout: the scenario is a short wait.
    thread::sleep(Duration::from_millis(100));
    gate.open();
    let mut served: Vec<usize> = (0..2)
        .map(|_| {
            let (i, r, _, _) = rx.recv_timeout(Duration::from_secs(10)).expect("answer");
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "slow answer"),
                "request {i}"
            );
            i
        })
        .collect();
    served.sort();
    assert_eq!(served, [0, 2]);
    for c in clients {
        c.join().unwrap();
    }
    let rejections = lb.running().shared().metrics.rejections();
    assert!(rejections.contains(&("queue_timeout", 1)), "{rejections:?}");
    assert!(lb.shutdown());
}
