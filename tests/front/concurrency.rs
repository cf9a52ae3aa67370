//! Many clients at once: every connection is served promptly even while the others stay open
//! (keep-alive clients do not close their connection after an answer).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Backend, Client, Lb};

const CLIENTS: usize = 40;

#[test]
fn a_burst_of_keep_alive_connections_is_served_without_waiting_for_others_to_close() {
    // A fresh balancer each round: the burst meets a front end that has not yet grown threads.
    for round in 0..5 {
        let backend = Backend::answering("ok");
        let lb = Lb::start(&[(&backend, 1)], |_| {});
        let addr = lb.addr;
        let started = Instant::now();
        let (answered_tx, answered) = mpsc::channel();
        // Each client keeps its connection open until every client was answered (or the test
        // gives up), like a browser or a pooled HTTP client would.
        let (release_tx, release) = mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let answered_tx = answered_tx.clone();
                let release = Arc::clone(&release);
                thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    client.send(
                        format!("GET /burst/{i} HTTP/1.1\r\nHost: h.test\r\n\r\n").as_bytes(),
                    );
                    if let Ok(Some(r)) = client.try_read_response_into("GET", &mut |_| {}) {
                        let _ = answered_tx.send((i, r.status));
                    }
                    let _ = release.lock().unwrap().recv();
                })
            })
            .collect();
        let deadline = started + Duration::from_secs(3);
        let mut ok = 0;
        while ok < CLIENTS {
            let left = deadline.saturating_duration_since(Instant::now());
            match answered.recv_timeout(left) {
                Ok((i, status)) => {
                    assert_eq!(status, 200, "client {i}");
                    ok += 1;
                }
                Err(_) => break,
            }
        }
        let reached_backend = backend.count();
        drop(release_tx);
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(
            ok, CLIENTS,
            "round {round}: only {ok} of {CLIENTS} concurrent connections were answered within 3s \
             while the others stayed open ({reached_backend} requests reached the backend in all)"
        );
    }
}
