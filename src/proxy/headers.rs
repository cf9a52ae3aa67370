//! The header rules of forwarding: hop-by-hop headers (RFC 9110 §7.6.1), which belong to one
//! connection, are removed in both directions; `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` tell the backend whom it answers; every other header passes through, values
//! byte for byte.
//!
//! The one exception: an upgrade to an allowed protocol ([`upgrade_protocols`], `upgrade
//! allow=websocket` by default) forwards `Upgrade` (the allowed protocols) and
//! `Connection: upgrade`, so that the backend can switch protocols (RFC 9110 §7.8). An upgrade
//! to any other protocol (`h2c`, say) loses both, as hop-by-hop headers, and is served as
//! plain HTTP/1.1.

use std::borrow::Cow;

use crate::decimal::push_ip;
use crate::http::fields::trim_ows;
use crate::http::{Framing, RequestHead};

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Headers the balancer sets itself on the way to the backend, or keeps to itself: the client's
/// `X-Balancer-Explain` asks the balancer, not the backend (see `explain.rs`), whether or not
/// `explain` is on.
const SET_BY_PROXY: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-balancer-explain",
];

/// True when `name`, in any case, must not be forwarded, given the message's
/// [`connection_tokens`].
fn is_hop_by_hop(name: &str, tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || tokens.iter().any(|t| name.eq_ignore_ascii_case(t))
}

/// The tokens of a message's `Connection` headers, lowercased, that name headers: `close` and
/// the names already in [`HOP_BY_HOP`] (`keep-alive`, the usual one) are left out, so that most
/// answers have none.
fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in values {
        for token in String::from_utf8_lossy(value).split(',') {
            let token = token.trim().to_ascii_lowercase();
            if !token.is_empty() && token != "close" && !HOP_BY_HOP.contains(&token.as_str()) {
                tokens.push(token);
            }
        }
    }
    tokens
}

/// The headers to send to the backend: the client's, minus hop-by-hop ones, the ones the
/// proxy sets and `X-Balancer-Explain`, plus `X-Forwarded-For` (the client's chain with `client` appended),
/// `X-Forwarded-Proto: http` and `X-Forwarded-Host` (the client's Host); for an allowed upgrade,
/// `Connection: upgrade` and `Upgrade: upgrade` (see [`upgrade_protocols`]). `Expect` is dropped
/// because the front end has already answered it. The client's headers are borrowed from
/// `head`, not copied: the HTTP library copies them once into the request it sends.
pub fn backend_request_headers<'a>(
    head: &'a RequestHead,
    framing: Framing,
    upgrade: Option<&'a [u8]>,
) -> Vec<HeaderPair<'a>> {
    // Bytes that are not UTF-8 become U+FFFD, which is in no header name: the tokens around
    // them still count.
    let connection = connection_tokens(head.header_values("connection"));
    let mut out: Vec<HeaderPair<'_>> = Vec::with_capacity(head.headers.len() + 4);
    for (name, value) in &head.headers {
        if is_hop_by_hop(name, &connection)
            || SET_BY_PROXY.iter().any(|h| name.eq_ignore_ascii_case(h))
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        out.push((name.into(), value.as_slice().into()));
    }
    if let Framing::Length(n) = framing {
        out.push(("Content-Length".into(), n.to_string().into_bytes().into()));
    }
    let mut xff: Vec<u8> = Vec::new();
    for entry in head.header_values("x-forwarded-for") {
        xff.extend_from_slice(entry);
        xff.extend_from_slice(b", ");
    }
    push_ip(&mut xff, head.client);
    out.push(("X-Forwarded-For".into(), xff.into()));
    out.push(("X-Forwarded-Proto".into(), b"http"[..].into()));
    if let Some(host) = head.header_bytes("host") {
        out.push(("X-Forwarded-Host".into(), host.into()));
    }
    if let Some(protocols) = upgrade {
        out.push(("Connection".into(), b"upgrade"[..].into()));
        out.push(("Upgrade".into(), protocols.into()));
    }
    out
}

/// The `Upgrade` value to forward when `head` asks to switch to a protocol in `allow` (lowercase
/// names, `upgrade allow=`): its tokens whose protocol is allowed, in the client's order, joined
/// by `, `. `None` when it is no allowed upgrade: no `Upgrade`, no `upgrade` in `Connection`
/// (RFC 9110 §7.8 requires both), no allowed protocol, HTTP/1.0 (which has no upgrade), or a
/// request body (an upgrade's handshake carries none here). Example: `Upgrade: h2c, websocket`
/// with `allow` `[websocket]` gives `websocket`.
pub fn upgrade_protocols(
    head: &RequestHead,
    framing: Framing,
    allow: &[String],
) -> Option<Vec<u8>> {
    if head.http10 || framing != Framing::None || !head.connection_has("upgrade") {
        return None;
    }
    let mut out = Vec::new();
    for token in head.header_values("upgrade").flat_map(tokens) {
        let name = protocol_name(token);
        if allow
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(name))
        {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(token);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The elements of a comma-separated header value (`Upgrade`, `Transfer-Encoding`), without
/// the whitespace around them; empty ones skipped.
pub(super) fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// The protocol of an `Upgrade` element: `websocket` of `websocket`, `foo` of `foo/2`.
pub(super) fn protocol_name(token: &[u8]) -> &[u8] {
    token.split(|&b| b == b'/').next().unwrap_or(token)
}

/// A header name and value, borrowed where they come unchanged from the client. Values are
/// bytes: obs-text passes through as received.
pub type HeaderPair<'a> = (Cow<'a, str>, Cow<'a, [u8]>);

/// The backend's response headers, kept as the HTTP library parsed them (nothing is copied);
/// [`ResponseHeaders::end_to_end`] gives the ones the client should see.
pub struct ResponseHeaders {
    map: ureq::http::HeaderMap,
    /// The header names the backend's `Connection` headers list: hop-by-hop too.
    connection: Vec<String>,
}

impl ResponseHeaders {
    /// Wraps a backend's headers.
    pub fn new(map: ureq::http::HeaderMap) -> Self {
        let connection = connection_tokens(map.get_all("connection").iter().map(|v| v.as_bytes()));
        ResponseHeaders { map, connection }
    }

    /// The headers to pass on, repeated ones repeated: all but the hop-by-hop ones and
    /// `Content-Length`, which reaches the client through the front end's own framing. The
    /// HTTP library gives names in lowercase, so they are compared as they are.
    pub fn end_to_end(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .filter(|(k, _)| {
                *k != "content-length"
                    && !HOP_BY_HOP.contains(k)
                    && !self.connection.iter().any(|t| t == k)
            })
    }

    /// All values of `name`, as received.
    pub(super) fn values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.map.get_all(name).into_iter().map(|v| v.as_bytes())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A request head as the front end hands it over: target `/x?y=1`, client 10.1.2.3.
    pub(in crate::proxy) fn head(method: &str, headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: "/x?y=1".into(),
            http10: false,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            client: "10.1.2.3".parse().unwrap(),
        }
    }

    #[test]
    fn obs_text_values_reach_the_request_unchanged() {
        let mut h = head("GET", &[("Host", "a")]);
        h.headers
            .push(("X-Latin1".into(), b"caf\xe9 \xff".to_vec()));
        let out = backend_request_headers(&h, Framing::None, None);
        let (name, value) = &out[1];
        assert_eq!(
            (name.as_ref(), value.as_ref()),
            ("X-Latin1", &b"caf\xe9 \xff"[..])
        );
        // What the HTTP library will send: the same bytes.
        let sent = ureq::http::HeaderValue::from_bytes(value).unwrap();
        assert_eq!(sent.as_bytes(), b"caf\xe9 \xff");
    }

    #[test]
    fn request_headers_drop_hop_by_hop_and_explain_and_add_forwarded() {
        let h = head(
            "GET",
            &[
                ("Host", "example.test"),
                ("Connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Proxy-Authorization", "x"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
                ("X-Forwarded-For", "192.0.2.1"),
                ("X-Forwarded-Proto", "https"),
                ("X-Balancer-Explain", "1"),
            ],
        );
        let out = backend_request_headers(&h, Framing::None, None);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            names,
            [
                "Host",
                "Cookie",
                "Cookie",
                "X-Forwarded-For",
                "X-Forwarded-Proto",
                "X-Forwarded-Host"
            ]
        );
        assert_eq!(out[3].1.as_ref(), b"192.0.2.1, 10.1.2.3");
        assert_eq!(out[4].1.as_ref(), b"http");
        assert_eq!(out[5].1.as_ref(), b"example.test");
    }

    #[test]
    fn only_an_upgrade_to_an_allowed_protocol_keeps_upgrade_and_connection() {
        let allow = ["websocket".to_string()];
        let upgrade = |headers: &[(&str, &str)], framing| {
            let h = head("GET", headers);
            upgrade_protocols(&h, framing, &allow).map(|v| String::from_utf8(v).unwrap())
        };
        let ws = [
            ("Host", "a"),
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "WebSocket"),
        ];
        assert_eq!(upgrade(&ws, Framing::None).as_deref(), Some("WebSocket"));
        // The worked example: the allowed protocols of several, in the client's order.
        let several = [
            ("Connection", "upgrade"),
            ("Upgrade", "h2c, websocket/13 , x"),
        ];
        assert_eq!(
            upgrade(&several, Framing::None).as_deref(),
            Some("websocket/13")
        );
        // Not an upgrade: no `Connection: upgrade`, another protocol, a body, no allow list.
        assert_eq!(upgrade(&[("Upgrade", "websocket")], Framing::None), None);
        assert_eq!(
            upgrade(
                &[("Connection", "upgrade"), ("Upgrade", "h2c")],
                Framing::None
            ),
            None
        );
        assert_eq!(upgrade(&ws, Framing::Length(3)), None);
        assert_eq!(
            upgrade_protocols(&head("GET", &ws), Framing::None, &[]),
            None
        );
        let mut old = head("GET", &ws);
        old.http10 = true;
        assert_eq!(upgrade_protocols(&old, Framing::None, &allow), None);

        // Forwarded: the client's own Connection and Upgrade are dropped as hop-by-hop, ours
        // added. Without an allowed upgrade, neither goes.
        let h = head("GET", &ws);
        let names = |out: &[HeaderPair<'_>]| -> Vec<String> {
            out.iter()
                .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
                .collect()
        };
        let out = names(&backend_request_headers(
            &h,
            Framing::None,
            Some(b"WebSocket"),
        ));
        assert!(out.ends_with(&["Connection: upgrade".into(), "Upgrade: WebSocket".into()]));
        assert_eq!(
            out.iter().filter(|l| l.starts_with("Upgrade")).count(),
            1,
            "{out:?}"
        );
        let out = names(&backend_request_headers(&h, Framing::None, None));
        assert!(!out
            .iter()
            .any(|l| l.starts_with("Upgrade") || l.starts_with("Connection")));
    }

    #[test]
    fn response_headers_drop_hop_by_hop() {
        let mut map = ureq::http::HeaderMap::new();
        for (k, v) in [
            ("content-type", "text/plain"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("upgrade", "h2c"),
        ] {
            map.append(k, v.parse().unwrap());
        }
        let headers = ResponseHeaders::new(map);
        let out: Vec<(&str, &[u8])> = headers.end_to_end().collect();
        assert_eq!(
            out,
            [
                ("content-type", &b"text/plain"[..]),
                ("set-cookie", b"a=1"),
                ("set-cookie", b"b=2")
            ]
        );
    }
}
