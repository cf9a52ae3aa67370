//! The demo servers' switches seen through the balancer (the binary, as a learner runs it):
//! `refuse` on one of three demo servers costs the clients nothing, because every request that
//! picks it finds the port refusing connections (its pooled connections closed too) and is
//! retried on another server, as the access log shows (`attempts=2`); and `drop` is passed on
//! as a connection closed mid-body, never as a complete answer.

use std::time::Duration;

use servers::{Behaviour, DemoServer};

use crate::support::{self, serial, BodyEnd, Client, LbProcess, Session};

/// Three demo servers in this process, as `--demo` starts them, and the balancer binary over
/// them with its access log on.
fn demo() -> (Vec<DemoServer>, LbProcess) {
    let servers: Vec<DemoServer> = (1..=3)
        .map(|i| servers::spawn(&format!("server{i}"), "127.0.0.1:0", Behaviour::default()))
        .collect::<Result<_, _>>()
        .expect("demo servers");
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.addr()))
        .collect();
    let lb = LbProcess::spawn_logging(&urls, &[]);
    (servers, lb)
}

/// What a learner does with curl: `/control?QUERY` on the demo server itself.
fn control(server: &DemoServer, query: &str) {
    let r = support::get(server.addr(), &format!("/control?{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_refusing_demo_server_fails_no_request_each_is_retried_on_another() {
    let _serial = serial();
    let (servers, lb) = demo();
    let mut session = Session::new(lb.addr);
    // Before the switch: every server answers, and the balancer keeps connections to each open,
    // which the switch must close too.
    for i in 0..30 {
        let r = session.get(&format!("/before/{i}")).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Longer than the test: it listens again by itself only after.
    control(&servers[1], "refuse=1m");
    support::wait_until("server2 to stop listening", Duration::from_secs(10), || {
        support::refuses_connections(servers[1].addr())
    });

    let refusing = format!("Hello from {}", servers[1].name());
    let mut errors = Vec::new();
    for i in 0..60 {
        match session.get(&format!("/refused/{i}")) {
            Ok(r) if r.status == 200 && !r.text().contains(&refusing) => {}
            Ok(r) => errors.push(format!("request {i}: {} {}", r.status, r.text())),
            Err(e) => errors.push(format!("request {i}: {e}")),
        }
    }
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    let retried = lb.access_line(&[
        " 200 ",
        "attempts=2",
        &format!("via={}>", servers[1].addr()),
    ]);
    assert!(retried.contains("/refused/"), "{retried}");
}

#[test]
fn a_dropping_demo_server_closes_the_clients_connection_mid_body() {
    let _serial = serial();
    let (servers, lb) = demo();
    for server in &servers {
        control(server, "drop=true");
    }
    let mut client = Client::connect(lb.addr);
    let r = client.request("GET /cut HTTP/1.1\r\nHost: lb.test\r\n\r\n");
    assert_eq!(r.status, 200, "the head was whole");
    assert!(
        matches!(r.end, BodyEnd::Truncated(n) if n > 0),
        "a body cut short must not look complete: {:?}",
        r.end
    );
}
