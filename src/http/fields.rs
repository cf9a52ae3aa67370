//! The grammar of the header fields whose values the balancer must read itself, not only pass
//! on: `Content-Length`, which frames a body on both sides of the proxy (a client's request, a
//! backend's answer), and `Host`, which names the origin a request is for. Both are read as
//! bytes, with only SP and HTAB as whitespace around a value ([`trim_ows`]): a proxy and a
//! server that read such a value differently frame or route the same message differently, which
//! is how request smuggling and cache poisoning work (RFC 9112 §11.2).
//!
//! One reading for both directions: `http::parse` frames requests with [`content_length`] and
//! checks their `Host` with [`is_valid_host`]; `proxy` frames backends' answers with the same
//! [`content_length`].

/// Strips optional whitespace from both ends of `v`: SP and HTAB only (OWS, RFC 9110 §5.6.3).
/// Any other byte, Unicode whitespace included, is part of the value: `str::trim` would take
/// U+00A0 or U+3000 away, and read `\u{a0}5` as `5`.
///
/// Example: `" \t5 "` gives `"5"`; `"\u{a0}5"` stays as it is.
pub fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// Why a `Content-Length` cannot frame a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLength {
    /// A value (or list element) that is not `1*DIGIT` fitting 64 bits: a sign, hex, a
    /// parameter, an empty element, Unicode whitespace, 2^64 or more.
    Invalid,
    /// Values that are each valid but not all equal.
    Conflicting,
}

/// The body length that all the `Content-Length` field values of one message say, or `None`
/// when there are none (RFC 9110 §8.6). Several field lines are one comma-separated list
/// (RFC 9110 §5.3); every element must be `1*DIGIT` (OWS around it allowed, leading zeros
/// allowed) and all must be the same number, which a recipient may then take as one value.
/// Anything else is [`BadLength`], never a guess: first-wins or last-wins is how two readers
/// end up framing one message two ways.
///
/// Example: `["5, 5"]` and `["5", "05"]` give `Ok(Some(5))`; `["+5"]`, `["5,"]` and
/// `["\u{a0}5"]` are `Invalid`; `["5", "6"]` is `Conflicting`; `[]` gives `Ok(None)`.
pub fn content_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, BadLength> {
    let mut length: Option<u64> = None;
    for element in values.into_iter().flat_map(|v| v.split(|&b| b == b',')) {
        let n = digits(trim_ows(element)).ok_or(BadLength::Invalid)?;
        if length.is_some_and(|l| l != n) {
            return Err(BadLength::Conflicting);
        }
        length = Some(n);
    }
    Ok(length)
}

/// `1*DIGIT` that fits 64 bits; `None` for anything else (no sign, no whitespace).
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// True when `value` is a valid `Host` field value: `uri-host [ ":" port ]` (RFC 9110 §7.2),
/// where (RFC 3986 §3.2.2, §3.2.3)
///
/// ```text
/// uri-host   = IP-literal / IPv4address / reg-name
/// IP-literal = "[" ( IPv6address / IPvFuture ) "]"
/// IPvFuture  = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
/// reg-name   = *( unreserved / pct-encoded / sub-delims )
/// port       = *DIGIT
/// ```
///
/// (an IPv4address is also a reg-name, so it needs no rule of its own). RFC 9112 §3.2 has a
/// server answer 400 to a Host with an invalid value. Two refinements of the bare grammar:
/// - an empty value is valid: RFC 9112 §3.2 has a client send it when the target URI has no
///   authority;
/// - a port with no host (`:80`) is not, as an `http` URI's host is never empty
///   (RFC 9110 §4.2.1), and a Host is that URI's authority.
///
/// Compared with nginx (`ngx_http_validate_host`): nginx refuses a NUL, `/` (and `\` on
/// Windows), control characters and spaces, `..`, and an empty host, and takes everything else
/// byte for byte, `a:b`, `u@a`, `a"b` and an unclosed `[::1` included. We follow the RFC's
/// grammar instead, one rule anyone can check: stricter on those (400), laxer on `a..b` (a valid
/// reg-name; nginx cares because it may turn the host into a file path) and on an empty Host
/// (valid here, as above). A port is checked as digits, not as a number: `a:99999` is valid
/// syntax, and it is the backend's to answer.
///
/// Examples: `a.test`, `a.test:8080`, `127.0.0.1`, `[::1]:80`, `a%2Db`, `` (empty) and `a:`
/// are valid; `a b`, `a/b`, `u@a`, `a:b`, `[::1`, `[::1]x`, `[fe80::1%25eth0]`, `a%zz`,
/// `:80` and `café` are not.
pub fn is_valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    // The host, then what follows it.
    let rest = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        if !is_ip_literal(&literal[..end]) {
            return false;
        }
        &literal[end + 1..]
    } else {
        // A reg-name has no `:`, so the first one starts the port.
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        if end == 0 || !is_reg_name(&value[..end]) {
            return false;
        }
        &value[end..]
    };
    rest.is_empty()
        || rest
            .strip_prefix(b":")
            .is_some_and(|port| port.iter().all(u8::is_ascii_digit))
}

/// `unreserved / sub-delims` (RFC 3986 §2.3, §2.2).
fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )`, `pct-encoded = "%" HEXDIG HEXDIG`.
fn is_reg_name(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let hex = v.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if is_unreserved_or_sub_delim(v[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// What is between `[` and `]`: an IPv6 address (RFC 4291 §2.2 text, as `std` reads it, which
/// takes no zone identifier) or an IPvFuture.
fn is_ip_literal(v: &[u8]) -> bool {
    if let Some(future) = v.strip_prefix(b"v").or_else(|| v.strip_prefix(b"V")) {
        let Some(dot) = future.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, rest) = (&future[..dot], &future[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !rest.is_empty()
            && rest
                .iter()
                .all(|&b| b == b':' || is_unreserved_or_sub_delim(b));
    }
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(values: &[&str]) -> Result<Option<u64>, BadLength> {
        content_length(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn content_length_is_digits_in_a_list_of_equal_values() {
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&["0"]), Ok(Some(0)));
        assert_eq!(cl(&["5"]), Ok(Some(5)));
        assert_eq!(cl(&["05"]), Ok(Some(5)));
        assert_eq!(cl(&["\t5 "]), Ok(Some(5)));
        assert_eq!(cl(&["5, 5"]), Ok(Some(5)));
        assert_eq!(cl(&["5 ,\t5"]), Ok(Some(5)));
        assert_eq!(cl(&["5", "05"]), Ok(Some(5)));
        assert_eq!(cl(&["18446744073709551615"]), Ok(Some(u64::MAX)));
        for bad in [
            "+5",
            "-5",
            "0x5",
            "5;ext",
            "5 5",
            "",
            " ",
            "5,",
            ",5",
            "5,,5",
            "18446744073709551616",
            "99999999999999999999999",
            "\u{a0}5",
            "\u{200a}5",
            "5\u{85}",
            "\u{663}",
        ] {
            assert_eq!(cl(&[bad]), Err(BadLength::Invalid), "{bad:?}");
        }
        assert_eq!(cl(&["5", "+5"]), Err(BadLength::Invalid));
        assert_eq!(cl(&["5, 6"]), Err(BadLength::Conflicting));
        assert_eq!(cl(&["5", "6"]), Err(BadLength::Conflicting));
        assert_eq!(cl(&["6", "5, 5"]), Err(BadLength::Conflicting));
    }

    #[test]
    fn ows_is_space_and_tab_only() {
        assert_eq!(trim_ows(b" \t5 \t"), b"5");
        assert_eq!(trim_ows(b"  "), b"");
        assert_eq!(trim_ows("\u{a0}5".as_bytes()), "\u{a0}5".as_bytes());
    }

    #[test]
    fn host_is_uri_host_and_an_optional_port() {
        for good in [
            "",
            "a",
            "a.test",
            "A.Test.",
            "a.test:8080",
            "a.test:",
            "a.test:99999",
            "127.0.0.1",
            "127.0.0.1:80",
            "999.1.1.1",
            "a..b",
            "xn--caf-dma.test",
            "a%2Db",
            "a_b~c-d",
            "!$&'()*+,;=",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::ffff:1.2.3.4]",
            "[v1.fe80::a+en1]",
            "[V7.a]:80",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b",
            " a",
            "a\t",
            "a/b",
            "a\\b",
            "a?b",
            "a#b",
            "u@a",
            "a\"b",
            "a<b",
            "a:b",
            "a:80:80",
            "a:-1",
            "a:+80",
            ":80",
            ":",
            "a%",
            "a%2",
            "a%zz",
            "[::1",
            "[::1]x",
            "[::1]:b",
            "[]",
            "[a.test]",
            "[127.0.0.1]",
            "[fe80::1%25eth0]",
            "[v1]",
            "[v.a]",
            "[vg.a]",
            "[v1.]",
            "[v1.a/b]",
            "::1",
            "café",
            "a\0b",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_valid_host(b"caf\xe9"));
    }
}
