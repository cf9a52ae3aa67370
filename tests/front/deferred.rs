//! Admission decided later (`http/defer.rs`): a handler whose `admit` answers "later" and whose
//! other thread settles the request. The front end alone, with a handler of the test's own:
//! parked requests wait without holding the poller, are resumed with the note (admitted or
//! refused, keep-alive kept, a pipelined request behind read afterwards), and are never left
//! waiting: a handle dropped unsettled, or one never settled, resumes the request with no note,
//! and a request parked when the server stops is answered 503 at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use loadbalancer::http::{
    Admission, Buffers, Defer, Deferred, Exchange, Framing, Gauges, Handler, Limits, Note, Refusal,
    Request, RequestHead, Server,
};

use crate::support::{wait_until, Client, Headers};

/// Defers every request whose path starts with `/later/`: `/later/yes/MS` and `/later/no/MS`
/// are settled after MS milliseconds with "yes" or "no" (`/later/yes/MS/WITHIN` has the poller
/// wait WITHIN ms instead of [`WITHIN`]); `/later/drop` drops its handle; `/later/never` keeps it
/// forever (the poller's deadline resumes it); `/later/hold` leaves it in `held` for the test.
#[derive(Default)]
struct Deferring {
    held: Arc<Mutex<Vec<Deferred>>>,
}

/// How long the poller waits for a note in this test.
const WITHIN: Duration = Duration::from_millis(300);

impl Handler for Deferring {
    fn admit(&self, head: &RequestHead, _: Framing, defer: &Defer<'_>) -> Admission {
        let Some(rest) = head.path().strip_prefix("/later/") else {
            return Admission::Admit;
        };
        let handle = defer.handle();
        let mut parts = rest.split('/');
        let (first, second) = (parts.next(), parts.next());
        let within = parts
            .next()
            .map_or(WITHIN, |ms| Duration::from_millis(ms.parse().unwrap()));
        match (first, second) {
            (Some(answer @ ("yes" | "no")), Some(ms)) => {
                let (answer, ms) = (answer.to_string(), ms.parse().unwrap());
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(ms));
                    handle.settle(Box::new(answer));
                });
            }
            (Some("drop"), _) => drop(handle),
            (Some("hold"), _) => self.held.lock().unwrap().push(handle),
            _ => std::mem::forget(handle),
        }
        Admission::Later { within }
    }

    fn resume(&self, _: &RequestHead, _: Framing, note: Option<Note>) -> Result<(), Refusal> {
        match note.map(|n| *n.downcast::<String>().unwrap()) {
            Some(answer) if answer == "yes" => Ok(()),
            Some(_) => Err(Refusal::retry_after(429, "said no", 1)),
            None => Err(Refusal::new(503, "undecided")),
        }
    }

    fn handle(&self, request: &Request, exchange: &mut Exchange<'_>) {
        let body = format!("handled {}", request.head.target);
        let _ = exchange.respond(200, [], Some(body.len() as u64), &mut body.as_bytes());
    }
}

fn server() -> Server {
    server_for(Deferring::default())
}

fn server_for(handler: Deferring) -> Server {
    let listener = loadbalancer::http::bind("127.0.0.1:0").unwrap();
    Server::start(
        listener,
        2,
        Limits::default(),
        Buffers::new(Default::default()),
        Arc::new(Gauges::default()),
        "deferred",
        Arc::new(handler),
    )
    .unwrap()
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n")
}

#[test]
fn a_deferred_admission_is_resumed_with_its_note_and_the_poller_serves_others_meanwhile() {
    let server = server();
    let addr: SocketAddr = server.addr();
    // A request parked for 400 ms does not hold up another connection.
    let slow = thread::spawn(move || {
        let started = Instant::now();
        let r = Client::connect(addr).request(&get("/later/yes/250"));
        (r.status, r.text(), started.elapsed())
    });
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let r = Client::connect(addr).request(&get("/now"));
    assert_eq!((r.status, r.text().as_str()), (200, "handled /now"));
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let (status, text, waited) = slow.join().unwrap();
    assert_eq!((status, text.as_str()), (200, "handled /later/yes/250"));
    assert!(waited >= Duration::from_millis(250), "{waited:?}");

    // Refused later, on a keep-alive connection with a request pipelined behind it: the
    // refusal keeps the connection, and the next request is read after it.
    let mut c = Client::connect(addr);
    c.send(format!("{}{}", get("/later/no/20"), get("/after")).as_bytes());
    let r = c.read_response("GET");
    assert_eq!((r.status, r.text().as_str()), (429, "said no\n"));
    let r = c.read_response("GET");
    assert_eq!((r.status, r.text().as_str()), (200, "handled /after"));
    server.shutdown(Duration::from_secs(2));
}

#[test]
fn a_deferred_admission_never_settled_is_resumed_without_a_note() {
    let server = server();
    let addr = server.addr();
    // Dropped unsettled: resumed at once.
    let started = Instant::now();
    let r = Client::connect(addr).request(&get("/later/drop"));
    assert_eq!((r.status, r.text().as_str()), (503, "undecided\n"));
    assert!(started.elapsed() < WITHIN, "{:?}", started.elapsed());
    // Never settled: resumed at its deadline, not at the poller's next 100 ms tick: eight in a
    // row, each within 60 ms of its 20 ms deadline (ticks would make that 1 chance in 60).
    for _ in 0..8 {
        let started = Instant::now();
        let r = Client::connect(addr).request(&get("/later/never/0/20"));
        assert_eq!(r.status, 503);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(20) && waited < Duration::from_millis(80),
            "{waited:?}"
        );
    }
    // A note that comes after its request was resumed is dropped, even when the same slot holds
    // another parked request by then: the late "yes" (at 600 ms; its request was resumed at
    // its 100 ms deadline) does not admit the request parked behind it on the same connection,
    // which its own "no" (at about 1 s) refuses.
    let mut c = Client::connect(addr);
    let r = c.request(&get("/later/yes/600/100"));
    assert_eq!(r.status, 503);
    let r = c.request(&get("/later/no/800/5000"));
    assert_eq!((r.status, r.text().as_str()), (429, "said no\n"));
    server.shutdown(Duration::from_secs(2));
}

#[test]
fn a_request_parked_when_the_server_stops_is_answered_503_at_once() {
    let held = Arc::new(Mutex::new(Vec::new()));
    let server = server_for(Deferring {
        held: Arc::clone(&held),
    });
    let addr = server.addr();
    // Parked with a deadline far beyond the drain: only the shutdown can answer it in time.
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr);
        let r = c.request(&get("/later/hold/0/30000"));
        let connection = r.header("connection").map(str::to_string);
        (r.status, r.text(), connection)
    });
    let parked = || !held.lock().unwrap().is_empty();
    wait_until("the request to be parked", Duration::from_secs(10), parked);
    let started = Instant::now();
    server.shutdown(Duration::from_secs(1));
    let (status, text, connection) = client.join().expect("the parked request got no answer");
    assert_eq!((status, text.as_str()), (503, "shutting down\n"));
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The note that comes after is dropped: nothing is left to settle.
    held.lock().unwrap().clear();
}
