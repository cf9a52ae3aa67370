//! Numbers as decimal digits, written straight into a buffer: the status line and
//! `Content-Length` of every answer and the numbers of every log line go through [`push_num`],
//! client addresses (the access log, `X-Forwarded-For`) through [`push_ip`].
//! `write!` would do the same through the formatting machinery, which callgrind put at several
//! thousand instructions per request (a tenth of a whole proxied request).

use std::io::Write;
use std::net::IpAddr;

/// Appends the decimal digits of `n`, zero-padded to at least `width` (at most 20) of them, with
/// nothing to allocate. Example: `push_num(&mut out, 7, 3)` appends `007`.
pub fn push_num(out: &mut (impl Write + ?Sized), n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    let mut rest = n;
    while rest > 0 || at == digits.len() {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let at = at.min(digits.len() - width.min(digits.len()));
    let _ = out.write_all(&digits[at..]);
}

/// Appends the client's address: an IPv4 address octet by octet, IPv6 (rarer) through `Display`.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_num(out, octet.into(), 1);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_zero_padded_to_the_width() {
        let text = |n, width| {
            let mut out = Vec::new();
            push_num(&mut out, n, width);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(0, 1), "0");
        assert_eq!(text(7, 3), "007");
        assert_eq!(text(1234, 2), "1234");
        assert_eq!(text(u64::MAX, 1), "18446744073709551615");
    }

    #[test]
    fn addresses_as_display_writes_them() {
        for ip in [
            "10.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }
}
