//! Admission: what the balancer never forwards, whatever the filter is told: `CONNECT`, a
//! target that is not a path, an `Authorization` that is not text. Checked on the
//! poller thread as soon as a request's head has arrived (`Balancing::admit` in `handler.rs`,
//! before the filter), so that such a request takes no worker and no backend ever sees it.

use crate::http::{Refusal, RequestHead};

/// Refuses what a load balancer does not forward: `CONNECT` (405); a target that is neither a
/// path nor `OPTIONS *` (400); an `Authorization` value with bytes other than visible ASCII, SP
/// and HTAB (400). The front end has already checked the head's framing and `Host` (whose
/// grammar has no other bytes), and rewritten an absolute-form target to a path (see
/// `http::parse`).
pub fn check_request(head: &RequestHead) -> Result<(), Refusal> {
    if head.method.eq_ignore_ascii_case("CONNECT") {
        return Err(Refusal::new(405, "CONNECT is not supported"));
    }
    if head.target == "*" {
        // The asterisk form is for OPTIONS only (RFC 9112 §3.2.4).
        if head.method != "OPTIONS" {
            return Err(Refusal::new(400, "the target * is only for OPTIONS"));
        }
    } else if !head.target.starts_with('/') {
        return Err(Refusal::new(
            400,
            "request target must be a path or an http:// URL",
        ));
    }
    // obs-text passes through in other headers, but ureq sends an Authorization only when it
    // is text.
    if !head.header_values("authorization").all(is_visible_ascii) {
        return Err(Refusal::new(
            400,
            "authorization header with bytes that are not ASCII",
        ));
    }
    Ok(())
}

/// True when `v` holds only visible ASCII, SP and HTAB: what a header value the HTTP library
/// reads as text may hold.
fn is_visible_ascii(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `METHOD /x?y=1` with `Host: a`, as the front end hands it over.
    fn head(method: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: "/x?y=1".into(),
            http10: false,
            headers: vec![("Host".into(), b"a".to_vec())],
            client: "10.1.2.3".parse().unwrap(),
        }
    }

    #[test]
    fn connect_and_targets_other_than_paths_and_options_asterisk_are_refused() {
        assert_eq!(check_request(&head("GET")), Ok(()));
        let status = |h: RequestHead| check_request(&h).unwrap_err().status;
        assert_eq!(status(head("CONNECT")), 405);
        let mut h = head("OPTIONS");
        h.target = "*".into();
        assert_eq!(check_request(&h), Ok(()));
        h.method = "GET".into();
        assert_eq!(status(h), 400);
        // The front end has rewritten an http:// target; anything else left is no path.
        let mut h = head("GET");
        h.target = "a:80".into();
        assert_eq!(status(h), 400);
    }

    #[test]
    fn authorization_must_be_ascii_other_headers_need_not() {
        let with = |name: &str, value: &[u8]| {
            let mut h = head("GET");
            h.headers.push((name.into(), value.to_vec()));
            h
        };
        assert_eq!(check_request(&with("X-Name", b"caf\xe9")), Ok(()));
        assert_eq!(check_request(&with("X-Name", b"caf\xc3\xa9")), Ok(()));
        assert_eq!(
            check_request(&with("Authorization", b"Basic\tYQ==")),
            Ok(())
        );
        let refused = check_request(&with("AUTHORIZATION", b"caf\xe9")).unwrap_err();
        assert_eq!(refused.status, 400);
    }
}
