//! Smooth weighted round-robin through the real front end: exact shares and nginx's interleaving.

use crate::support::{Backend, Client, Lb};

#[test]
fn weights_5_1_1_give_exact_shares_in_smooth_order() {
    let a = Backend::answering("a");
    let b = Backend::answering("b");
    let c = Backend::answering("c");
    let lb = Lb::start(&[(&a, 5), (&b, 1), (&c, 1)], |_| {});

    // Sequential requests on one keep-alive connection: each is answered before the next is
    // sent, so the order of picks is the order of answers.
    let mut client = Client::connect(lb.addr);
    let mut answers = String::with_capacity(700);
    for i in 0..700 {
        let r = client.request(&format!("GET /n/{i} HTTP/1.1\r\nHost: lb.test\r\n\r\n"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        answers.push_str(&r.text());
    }

    assert_eq!(&answers[..7], "aabacaa", "the first seven picks");
    let count = |name: char| answers.chars().filter(|&ch| ch == name).count();
    assert_eq!((count('a'), count('b'), count('c')), (500, 100, 100));
    // The whole run is the seven-pick cycle repeated.
    assert_eq!(answers, "aabacaa".repeat(100));
    // And the backends agree with what the client saw.
    assert_eq!((a.count(), b.count(), c.count()), (500, 100, 100));
    assert!(lb.shutdown(), "drained");
}
