//! `--demo` as a learner runs it, on ports of its own: a demo server for each backend on this
//! machine, whatever the port (`serverN` for the Nth backend), answering through the balancer,
//! WebSockets at `/ws` too; a backend elsewhere, or on a port already taken, gets a warning
//! that says why it has none.

use std::collections::BTreeSet;

use crate::support::{self, free_port, Backend, LbProcess};

#[test]
fn demo_serves_any_local_ports_and_says_why_it_skips_a_backend() {
    let (one, two) = (free_port(), free_port());
    // Already listening on its port: the demo server cannot bind it, and this one answers.
    let running = Backend::answering("already running");
    let conf = format!(
        "health off\n\
         backend http://localhost:{one}\n\
         backend http://127.0.0.1:{two}\n\
         backend {}\n\
         backend http://no-such-backend.invalid:8081\n",
        running.url()
    );
    let lb = LbProcess::with_config_file(&conf, &["--demo"], "info");
    lb.wait_log("server2: listening on", 1);

    let mut answers = BTreeSet::new();
    for _ in 0..12 {
        let r = support::get(lb.addr, "/");
        assert_eq!(r.status, 200, "{}", r.text());
        answers.insert(r.text());
    }
    let expected: BTreeSet<String> = [
        format!(r#"{{"message":"Hello from server1","address":":{one}"}}"#),
        format!(r#"{{"message":"Hello from server2","address":":{two}"}}"#),
        "already running".to_string(),
    ]
    .into_iter()
    .collect();
    assert_eq!(answers, expected);

    let taken = lb.wait_log(
        &format!("not starting a demo server for {}", running.url()),
        1,
    );
    assert!(
        taken.contains(&format!("port {} is in use", running.addr().port())),
        "{taken}"
    );
    let elsewhere = lb.wait_log(
        "not starting a demo server for http://no-such-backend.invalid:8081",
        1,
    );
    assert!(
        elsewhere.contains("no-such-backend.invalid is not on this machine"),
        "{elsewhere}"
    );
    assert!(elsewhere.contains("WARN"), "{elsewhere}");
}

#[test]
fn the_demo_servers_echo_websockets_at_ws_with_their_names() {
    let (one, two) = (free_port(), free_port());
    let conf =
        format!("health off\nbackend http://127.0.0.1:{one}\nbackend http://127.0.0.1:{two}\n");
    let lb = LbProcess::with_config_file(&conf, &["--demo"], "info");
    lb.wait_log("server2: listening on", 1);
    let mut names = BTreeSet::new();
    for _ in 0..2 {
        let mut ws = support::ws_connect(lb.addr, "/ws");
        let echo = support::ws_echo(&mut ws, "hi");
        assert!(echo.ends_with(": hi"), "{echo}");
        names.insert(echo);
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    }
    let both: BTreeSet<String> = ["server1: hi", "server2: hi"].map(String::from).into();
    assert_eq!(
        names, both,
        "one tunnel to each backend, each echo with its name"
    );
    lb.access_line(&["GET /ws 101", "end=backend"]);
}
