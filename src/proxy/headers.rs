//! The header rules of forwarding: hop-by-hop headers (RFC 9110 §7.6.1), which belong to one
//! connection, are removed in both directions; `X-Forwarded-For`, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` tell the backend whom it answers; every other header passes through, values
//! byte for byte.

use std::borrow::Cow;

use crate::decimal::push_ip;
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
/// `X-Forwarded-Proto: http` and `X-Forwarded-Host` (the client's Host). `Expect` is dropped
/// because the front end has already answered it. The client's headers are borrowed from
/// `head`, not copied: the HTTP library copies them once into the request it sends.
pub fn backend_request_headers(head: &RequestHead, framing: Framing) -> Vec<HeaderPair<'_>> {
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
    out
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
        let out = backend_request_headers(&h, Framing::None);
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
        let out = backend_request_headers(&h, Framing::None);
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
