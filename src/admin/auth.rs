//! The admin token: who may see the admin pages. A request shows it as
//! `Authorization: Bearer TOKEN` or as `?token=TOKEN` in the query (so that a browser can open
//! the dashboard), and it is compared in constant time, so that how long a refusal takes tells an
//! attacker nothing about how much of a guess was right.

/// True when the request carries `token`: as `Authorization: Bearer TOKEN` or as `token=TOKEN`
/// in the query (percent-decoded). Comparisons take the same time wherever the first
/// difference is.
pub(super) fn authorized(token: &str, authorization: Option<&str>, query: &str) -> bool {
    let bearer = authorization.and_then(|h| {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    let from_query = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    });
    // Look at both, so the time taken does not tell which one was present.
    let by_header = bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token.as_bytes()));
    let by_query = from_query.is_some_and(|q| constant_time_eq(&q, token.as_bytes()));
    by_header | by_query
}

/// Compares two byte strings in time that depends only on `presented`'s length, never on where
/// they differ.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, p) in presented.iter().enumerate() {
        let e = if expected.is_empty() {
            0
        } else {
            expected[i % expected.len()]
        };
        diff |= p ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it) in a query value.
fn percent_decode(s: &str) -> Vec<u8> {
    crate::percent::decode(s.as_bytes(), |b| if b == b'+' { b' ' } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checks() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3cretX", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"S3cret", b"s3cret"));
        assert!(authorized("s3cret", Some("Bearer s3cret"), ""));
        assert!(authorized("s3cret", Some("bearer  s3cret "), ""));
        assert!(!authorized("s3cret", Some("Basic s3cret"), ""));
        assert!(!authorized("s3cret", Some("Bearer s3cre"), ""));
        assert!(authorized("s3cret", None, "a=1&token=s3cret"));
        assert!(authorized("a b&c", None, "token=a+b%26c"));
        assert!(!authorized("s3cret", None, "tokens=s3cret"));
        assert!(!authorized("s3cret", None, ""));
        assert_eq!(percent_decode("%41%4a%zz%4"), b"AJ%zz%4");
    }
}
