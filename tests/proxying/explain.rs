//! `explain on`: a request with `X-Balancer-Explain: 1` gets the reasons for its decision in a
//! header of that name (the format is in src/explain.rs), the backend never sees the request
//! header, and with `explain off` nothing is told at all.

use std::collections::BTreeMap;
use std::time::Duration;

use loadbalancer::config::BackendConfig;

use crate::support::{
    admin_on, admin_status, dead_backend_url, test_config, wait_until, Backend, Client, Headers,
    Lb, Response,
};

/// `GET target` on `client`, asking for an explanation.
fn ask(client: &mut Client, target: &str) -> Response {
    client.request(&format!(
        "GET {target} HTTP/1.1\r\nHost: lb.test\r\nX-Balancer-Explain: 1\r\n\r\n"
    ))
}

/// The answer's explanation, field by field.
fn fields(r: &Response) -> BTreeMap<String, String> {
    let line = r
        .header("x-balancer-explain")
        .unwrap_or_else(|| panic!("no X-Balancer-Explain in {:?}", r.headers));
    assert!(line.is_ascii() && line.len() <= 1024, "{line}");
    line.split("; ")
        .map(|f| {
            let (k, v) = f.split_once('=').expect("name=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Backend names in a line replaced by short ones, so that expectations read like nginx's table.
fn short(line: &str, names: &[(&Backend, &str)]) -> String {
    names
        .iter()
        .fold(line.to_string(), |l, (b, n)| l.replace(&b.lb_name(), n))
}

fn explain_on(c: &mut loadbalancer::Config) {
    c.explain = true;
}

#[test]
fn a_5_1_1_pool_explains_nginx_worked_example_pick_by_pick() {
    let (a, b, c) = (
        Backend::answering("a"),
        Backend::answering("b"),
        Backend::answering("c"),
    );
    let lb = Lb::start(&[(&a, 5), (&b, 1), (&c, 1)], explain_on);
    let names = [(&a, "a"), (&b, "b"), (&c, "c")];
    let mut client = Client::connect(lb.addr);
    let lines: Vec<String> = (0..7)
        .map(|i| {
            let r = ask(&mut client, &format!("/n/{i}"));
            assert_eq!(r.status, 200);
            let line = short(r.header("x-balancer-explain").unwrap(), &names);
            assert!(line.starts_with(&format!("pick={}", r.text())), "{line}");
            line
        })
        .collect();
    // The module documentation of src/balance/selection.rs, as the client reads it.
    let ew = "ew=a:5,b:1,c:1";
    assert_eq!(
        lines,
        [
            format!("pick=a; cw=a:5>-2,b:1>1,c:1>1; {ew}"),
            format!("pick=a; cw=a:3>-4,b:2>2,c:2>2; {ew}"),
            format!("pick=b; cw=a:1>1,b:3>-4,c:3>3; {ew}"),
            format!("pick=a; cw=a:6>-1,b:-3>-3,c:4>4; {ew}"),
            format!("pick=c; cw=a:4>4,b:-2>-2,c:5>-2; {ew}"),
            format!("pick=a; cw=a:9>2,b:-1>-1,c:-1>-1; {ew}"),
            format!("pick=a; cw=a:7>0,b:0>0,c:0>0; {ew}"),
        ]
    );
    for backend in [&a, &b, &c] {
        for seen in backend.requests() {
            assert!(!seen.has_header("x-balancer-explain"), "{:?}", seen.headers);
        }
    }
}

#[test]
fn a_backend_whose_breaker_is_open_is_named_as_skipped_with_the_time_left() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    b.set_failing(true);
    let lb = Lb::start(&[(&a, 1), (&b, 1)], |c| {
        explain_on(c);
        c.breaker.failures = 1;
        c.breaker.cooldown = Duration::from_secs(30);
    });
    let mut client = Client::connect(lb.addr);
    // a, then b answers 503 and its breaker opens.
    assert_eq!(ask(&mut client, "/1").text(), "a");
    assert_eq!(ask(&mut client, "/2").status, 503);
    // a takes every request now; when b wins the round-robin (the next pick but one, or later
    // if the maintenance thread has lowered b's weight for its failure) it is passed over.
    let last = (0..60)
        .map(|i| {
            let r = ask(&mut client, &format!("/{i}"));
            assert_eq!((r.status, r.text().as_str()), (200, "a"));
            fields(&r)
        })
        .find(|f| f.contains_key("skip"))
        .expect("b skipped");
    assert_eq!(last["pick"], a.lb_name(), "{last:?}");
    let skip = &last["skip"];
    let left = skip
        .strip_prefix(&format!("{}(breaker_open ", b.lb_name()))
        .and_then(|s| s.strip_suffix("s)"))
        .unwrap_or_else(|| panic!("b skipped for its breaker: {skip}"));
    let left: u64 = left.parse().unwrap();
    assert!((1..=30).contains(&left), "{skip}");
    assert!(!last.contains_key("retry"), "nothing was retried: {last:?}");
}

#[test]
fn a_retry_is_shown_with_its_reason() {
    let a = Backend::answering("a");
    let lb = Lb::with_config({
        let mut c = test_config(&[(&a, 1)]);
        explain_on(&mut c);
        // A closed port first: the round-robin picks it first (a tie goes to the first).
        let dead = BackendConfig::parse(&dead_backend_url(), 1).unwrap();
        c.backends.insert(0, dead);
        c
    });
    let dead = lb.running().config().backends[0].name();
    let r = ask(&mut Client::connect(lb.addr), "/");
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    let f = fields(&r);
    let a = a.lb_name();
    assert_eq!(f["pick"], a);
    // The retry's pick: the dead one keeps its score, a takes the request.
    assert_eq!(f["cw"], format!("{dead}:-1>-1,{a}:2>1"));
    assert_eq!(f["skip"], format!("{dead}(tried)"));
    assert_eq!(f["retry"], format!("{dead}(backend_unreachable)"));
    assert!(f["ew"].starts_with(&format!("{dead}:")), "{f:?}");
}

#[test]
fn filter_verdicts_and_refusals_are_explained_and_every_decision_is_kept() {
    let a = Backend::answering("a");
    let mut config = test_config(&[(&a, 1)]);
    config
        .filter
        .apply_line("deny_path", &["/private"])
        .unwrap();
    explain_on(&mut config);
    admin_on(&mut config);
    let lb = Lb::with_config(config);
    let mut client = Client::connect(lb.addr);
    let refused = ask(&mut client, "/private/x");
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("x-balancer-explain"),
        Some("filter=refused; refused=403 path")
    );
    let mut client = Client::connect(lb.addr);
    let passed = ask(&mut client, "/open");
    assert_eq!(fields(&passed)["filter"], "pass");
    // A request that does not ask gets no header, and its decision is kept all the same.
    let quiet = client.request("GET /quiet HTTP/1.1\r\nHost: lb.test\r\n\r\n");
    assert!(
        !quiet.has_header("x-balancer-explain"),
        "{:?}",
        quiet.headers
    );
    // A decision is kept once its answer is on its way: the worker may still be at it.
    let admin = lb.running().admin_addr().unwrap();
    let kept = || -> Vec<(String, u64, String)> {
        let status = admin_status(admin);
        assert_eq!(status["explain"], true);
        let decisions = status["decisions"].as_array().unwrap().iter();
        decisions
            .map(|d| {
                let target = d["target"].as_str().unwrap().to_string();
                let line = d["line"].as_str().unwrap().to_string();
                (target, d["status"].as_u64().unwrap(), line)
            })
            .collect()
    };
    wait_until("three decisions", Duration::from_secs(5), || {
        kept().len() == 3
    });
    let kept = kept();
    let pick = format!("filter=pass; pick={}; ", a.lb_name());
    assert_eq!((kept[0].0.as_str(), kept[0].1), ("/quiet", 200));
    assert!(kept[0].2.starts_with(&pick), "{kept:?}");
    assert_eq!(kept[1].0, "/open");
    assert_eq!(
        (kept[2].0.as_str(), kept[2].1, kept[2].2.as_str()),
        ("/private/x", 403, "filter=refused; refused=403 path")
    );
}

#[test]
fn with_explain_off_nothing_is_told_and_the_backend_never_sees_the_header() {
    let a = Backend::answering("a");
    let lb = Lb::start(&[(&a, 1)], admin_on);
    assert!(!lb.running().config().explain, "off by default");
    let r = ask(&mut Client::connect(lb.addr), "/");
    assert_eq!(r.status, 200);
    assert!(!r.has_header("x-balancer-explain"), "{:?}", r.headers);
    assert!(!a.only_request().has_header("x-balancer-explain"));
    let status = admin_status(lb.running().admin_addr().unwrap());
    assert_eq!(status["explain"], false);
    assert_eq!(status["decisions"].as_array().map(Vec::len), Some(0));
}
