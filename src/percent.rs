//! Percent-decoding (RFC 3986 §2.1), shared by the admin pages' query string and the filter's
//! path rules.

/// Decodes the `%XX` escapes in `input`. Every byte that is not part of an escape goes through
/// `plain` first, so a caller can read `+` as a space (a query value) or `\` as `/` (a path the
/// way some backends read it). A `%` not followed by two hex digits is kept as it is.
pub fn decode(input: &[u8], plain: impl Fn(u8) -> u8) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let escape = input
                .get(i + 1)
                .copied()
                .and_then(hex)
                .zip(input.get(i + 2).copied().and_then(hex));
            if let Some((h, l)) = escape {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(plain(input[i]));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn escapes_plain_bytes_and_broken_escapes() {
        let same = |b| b;
        assert_eq!(decode(b"/%2egit/%2Fx", same), b"/.git//x");
        assert_eq!(
            decode(b"a+b%2Bc", |b| if b == b'+' { b' ' } else { b }),
            b"a b+c"
        );
        assert_eq!(decode(b"%zz%4", same), b"%zz%4");
        assert_eq!(decode(b"%", same), b"%");
        assert_eq!(
            decode(br"a\b%5C", |b| if b == b'\\' { b'/' } else { b }),
            br"a/b\"
        );
    }
}
