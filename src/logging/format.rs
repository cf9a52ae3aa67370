//! The shapes of a log line, each written into a line buffer (no allocation of its own).
//!
//! Every log line starts with [`prefix`]: `2026-11-25T17:13:08.123Z INFO  target: `. An
//! access-log line then follows one of three formats (`access_log format=`); for a request
//! `GET /a?b HTTP/1.1` from 192.0.2.7 with `Referer: http://x/` and `User-Agent: curl/8.5`,
//! answered 200 with 6 body bytes by localhost:8081 in 22.04 ms:
//!
//! ```text
//! plain     2026-12-06T20:24:22.250Z INFO  access: 192.0.2.7 GET /a?b 200 localhost:8081 22.0ms 6
//! combined  192.0.2.7 - - [06/Dec/2026:20:24:22 +0000] "GET /a?b HTTP/1.1" 200 6 "http://x/" "curl/8.5"
//! json      {"time":"2026-12-06T20:24:22.250Z","client":"192.0.2.7","method":"GET","target":"/a?b",
//!            "protocol":"HTTP/1.1","status":200,"bytes":6,"duration_ms":22.0,"backend":"localhost:8081",
//!            "attempts":1,"via":null,"reason":null,"aborted":false,"referer":"http://x/",
//!            "user_agent":"curl/8.5"}                                       (one line)
//! ```
//!
//! `combined` is nginx's predefined format byte for byte (`$remote_user` is always `-`, the time
//! is UTC), with nginx's escaping: `"`, `\`, control bytes and bytes from 0x7F up become `\xHH`.
//! A request refused before its head was read has `"-"` as its request line.

use std::borrow::Cow;
use std::net::IpAddr;

use log::Level;
use serde::{Serialize, Serializer};

use super::access::{AccessEntry, TunnelTotals};
use super::time::Utc;
use crate::decimal::{push_ip, push_num};

// Every access line is written piece by piece, numbers and addresses included, rather than with
// `write!`: the formatting machinery took about 6 000 instructions a line (callgrind), a tenth
// of a whole proxied request.

/// The start of every log line: time, level padded to five, target.
pub fn prefix(out: &mut Vec<u8>, time: Utc, level: Level, target: &str) {
    time.millis().write(out);
    out.push(b' ');
    let level = level.as_str();
    out.extend_from_slice(level.as_bytes());
    out.extend_from_slice(&b"     "[level.len().min(5)..]);
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b": ");
}

/// Today's line, after the [`prefix`]: `client method target status backend duration bytes`,
/// then what applies of `attempts=N via=a>b`, `reason=CODE`, `aborted` and, for a tunnel,
/// `up=N down=N end=HOW`. The duration is in milliseconds to a tenth (rounded half up).
pub fn plain(out: &mut Vec<u8>, e: &AccessEntry<'_>) {
    let (method, target) = e
        .request
        .as_ref()
        .map_or(("-", "-"), |r| (r.method, r.target));
    push_ip(out, e.client);
    for word in [method, target] {
        out.push(b' ');
        out.extend_from_slice(word.as_bytes());
    }
    out.push(b' ');
    push_num(out, e.status.into(), 1);
    out.push(b' ');
    out.extend_from_slice(e.backend.unwrap_or("-").as_bytes());
    out.push(b' ');
    let tenths = (e.duration.as_micros() + 50) / 100;
    push_num(out, (tenths / 10) as u64, 1);
    out.push(b'.');
    push_num(out, (tenths % 10) as u64, 1);
    out.extend_from_slice(b"ms ");
    push_num(out, e.bytes, 1);
    if e.attempts > 1 {
        out.extend_from_slice(b" attempts=");
        push_num(out, e.attempts.into(), 1);
        out.extend_from_slice(b" via=");
        out.extend_from_slice(e.via.as_bytes());
    }
    if let Some(reason) = e.reason {
        out.extend_from_slice(b" reason=");
        out.extend_from_slice(reason.as_bytes());
    }
    if e.aborted {
        out.extend_from_slice(b" aborted");
    }
    if let Some(t) = &e.tunnel {
        out.extend_from_slice(b" up=");
        push_num(out, t.up, 1);
        out.extend_from_slice(b" down=");
        push_num(out, t.down, 1);
        out.extend_from_slice(b" end=");
        out.extend_from_slice(t.end.as_bytes());
    }
    out.push(b'\n');
}

/// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent "$http_referer" "$http_user_agent"`.
pub fn combined(out: &mut Vec<u8>, time: Utc, e: &AccessEntry<'_>) {
    push_ip(out, e.client);
    out.extend_from_slice(b" - - [");
    time.common_log().write(out);
    out.extend_from_slice(b"] \"");
    match &e.request {
        Some(r) => {
            escaped(out, r.method.as_bytes());
            out.push(b' ');
            escaped(out, r.target.as_bytes());
            out.push(b' ');
            out.extend_from_slice(r.protocol().as_bytes());
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b"\" ");
    push_num(out, e.status.into(), 1);
    out.push(b' ');
    push_num(out, e.bytes, 1);
    out.extend_from_slice(b" \"");
    let header = |name| e.request.as_ref().and_then(|r| r.header(name));
    escaped_or_dash(out, header("referer"));
    out.extend_from_slice(b"\" \"");
    escaped_or_dash(out, header("user-agent"));
    out.extend_from_slice(b"\"\n");
}

fn escaped_or_dash(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => escaped(out, v),
        None => out.push(b'-'),
    }
}

/// Appends `bytes` as nginx writes a variable in a log line: `"`, `\`, bytes below 0x20 and
/// from 0x7F up become `\xHH` (upper-case hex), so that a line is always one line and its
/// quoted fields always end where they seem to. `a"b\` becomes `a\x22b\x5C`.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if !(0x20..0x7F).contains(&b) || b == b'"' || b == b'\\' {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// One JSON object per line. A field that does not apply is `null`: `method`, `target`,
/// `protocol` before a head was read, `backend` when none answered, `via` without a retry,
/// `reason` when a backend answered, `referer` and `user_agent` when not sent. Header bytes that
/// are not UTF-8 become U+FFFD.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: Iso,
    client: IpAddr,
    method: Option<&'a str>,
    target: Option<&'a str>,
    protocol: Option<&'static str>,
    status: u16,
    bytes: u64,
    duration_ms: f64,
    backend: Option<&'a str>,
    attempts: u32,
    via: Option<&'a str>,
    reason: Option<&'a str>,
    aborted: bool,
    referer: Option<Cow<'a, str>>,
    user_agent: Option<Cow<'a, str>>,
    /// A tunnel's `{"up", "down", "end"}`, logged when it ends; `null` for other requests.
    tunnel: Option<&'a TunnelTotals<'a>>,
}

/// A time serialised as RFC 3339 with milliseconds, without a `String` in between.
struct Iso(Utc);

impl Serialize for Iso {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.millis())
    }
}

/// The `json` format: one object, then a newline.
pub fn json(out: &mut Vec<u8>, time: Utc, e: &AccessEntry<'_>) {
    let r = e.request.as_ref();
    let header = |name| r.and_then(|r| r.header(name)).map(String::from_utf8_lossy);
    let line = JsonLine {
        time: Iso(time),
        client: e.client,
        method: r.map(|r| r.method),
        target: r.map(|r| r.target),
        protocol: r.map(|r| r.protocol()),
        status: e.status,
        bytes: e.bytes,
        // To a tenth of a millisecond, as the plain line.
        duration_ms: (e.duration.as_secs_f64() * 10_000.0).round() / 10.0,
        backend: e.backend,
        attempts: e.attempts,
        via: (e.attempts > 1).then_some(e.via),
        reason: e.reason,
        aborted: e.aborted,
        referer: header("referer"),
        user_agent: header("user-agent"),
        tunnel: e.tunnel.as_ref(),
    };
    // Writing into a Vec cannot fail, and every field serialises.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::access::RequestLine;
    use std::time::{Duration, UNIX_EPOCH};

    fn time() -> Utc {
        Utc::at(UNIX_EPOCH + Duration::from_millis(1_796_588_662_250))
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn headers() -> Vec<(String, Vec<u8>)> {
        vec![
            ("Host".into(), b"t".to_vec()),
            ("Referer".into(), b"http://x/".to_vec()),
            ("User-Agent".into(), b"curl/8.5".to_vec()),
        ]
    }

    fn entry(headers: &[(String, Vec<u8>)]) -> AccessEntry<'_> {
        AccessEntry {
            client: "192.0.2.7".parse().unwrap(),
            request: Some(RequestLine {
                method: "GET",
                target: "/a?b",
                http10: false,
                headers,
            }),
            status: 200,
            backend: Some("localhost:8081"),
            duration: Duration::from_micros(22_040),
            bytes: 6,
            attempts: 1,
            via: "",
            reason: None,
            aborted: false,
            tunnel: None,
        }
    }

    #[test]
    fn prefix_and_plain() {
        let h = headers();
        let line = text(|o| {
            prefix(o, time(), Level::Info, "access");
            plain(o, &entry(&h));
        });
        assert_eq!(
            line,
            "2026-12-06T20:24:22.250Z INFO  access: 192.0.2.7 GET /a?b 200 localhost:8081 22.0ms 6\n"
        );
        let refused = AccessEntry {
            request: None,
            status: 408,
            backend: None,
            attempts: 3,
            via: "a>b",
            reason: Some("head_timeout"),
            aborted: true,
            ..entry(&h)
        };
        assert_eq!(
            text(|o| plain(o, &refused)),
            "192.0.2.7 - - 408 - 22.0ms 6 attempts=3 via=a>b reason=head_timeout aborted\n"
        );
        // The level is padded as `{:<5}` pads it; IPv6 as `Display` writes it; a duration to a
        // tenth of a millisecond, half up.
        for (level, shown) in [(Level::Warn, "WARN  x: "), (Level::Error, "ERROR x: ")] {
            assert!(text(|o| prefix(o, time(), level, "x")).ends_with(shown));
        }
        let v6 = AccessEntry {
            client: "2001:db8::7".parse().unwrap(),
            duration: Duration::from_micros(1_250),
            ..entry(&h)
        };
        assert!(
            text(|o| plain(o, &v6)).starts_with("2001:db8::7 GET /a?b 200 localhost:8081 1.3ms 6")
        );
        let slow = AccessEntry {
            duration: Duration::from_secs(12) + Duration::from_micros(340_049),
            ..entry(&h)
        };
        assert!(text(|o| plain(o, &slow)).contains(" 12340.0ms "));
        let tunnel = AccessEntry {
            status: 101,
            tunnel: Some(TunnelTotals {
                up: 30,
                down: 6,
                end: "backend",
            }),
            ..entry(&h)
        };
        assert!(text(|o| plain(o, &tunnel))
            .ends_with(" 101 localhost:8081 22.0ms 6 up=30 down=6 end=backend\n"));
        let v: serde_json::Value =
            serde_json::from_str(&text(|o| json(o, time(), &tunnel))).unwrap();
        assert_eq!(
            v["tunnel"],
            serde_json::json!({"up": 30, "down": 6, "end": "backend"})
        );
    }

    #[test]
    fn combined_is_nginx_combined() {
        let h = headers();
        assert_eq!(
            text(|o| combined(o, time(), &entry(&h))),
            "192.0.2.7 - - [06/Dec/2026:20:24:22 +0000] \"GET /a?b HTTP/1.1\" 200 6 \"http://x/\" \
             \"curl/8.5\"\n"
        );
        // Missing headers are `-`; an HTTP/1.0 request says so; no head at all is "-".
        let bare = [("Host".to_string(), b"t".to_vec())];
        let mut e = entry(&bare);
        e.request.as_mut().unwrap().http10 = true;
        assert_eq!(
            text(|o| combined(o, time(), &e)),
            "192.0.2.7 - - [06/Dec/2026:20:24:22 +0000] \"GET /a?b HTTP/1.0\" 200 6 \"-\" \"-\"\n"
        );
        let none = AccessEntry {
            request: None,
            status: 400,
            ..entry(&bare)
        };
        assert!(text(|o| combined(o, time(), &none)).contains("] \"-\" 400 6 \"-\" \"-\"\n"));
    }

    #[test]
    fn combined_escapes_as_nginx_does() {
        let h = vec![(
            "User-Agent".to_string(),
            b"a\"b\\c\td\x7f\xc3\xa9 ~".to_vec(),
        )];
        let mut e = entry(&h);
        e.request.as_mut().unwrap().target = "/q\"x";
        let line = text(|o| combined(o, time(), &e));
        assert!(line.contains("\"GET /q\\x22x HTTP/1.1\""), "{line}");
        assert!(
            line.ends_with("\"-\" \"a\\x22b\\x5Cc\\x09d\\x7F\\xC3\\xA9 ~\"\n"),
            "{line}"
        );
    }

    #[test]
    fn json_has_every_field() {
        let h = headers();
        let mut e = entry(&h);
        e.attempts = 2;
        e.via = "a:1>b:2";
        let line = text(|o| json(o, time(), &e));
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let expected = serde_json::json!({
            "time": "2026-12-06T20:24:22.250Z", "client": "192.0.2.7", "method": "GET",
            "target": "/a?b", "protocol": "HTTP/1.1", "status": 200, "bytes": 6,
            "duration_ms": 22.0, "backend": "localhost:8081", "attempts": 2, "via": "a:1>b:2",
            "reason": null, "aborted": false, "referer": "http://x/", "user_agent": "curl/8.5",
            "tunnel": null
        });
        assert_eq!(v, expected);
        let none = AccessEntry {
            request: None,
            backend: None,
            reason: Some("head_timeout"),
            ..entry(&h)
        };
        let v: serde_json::Value = serde_json::from_str(&text(|o| json(o, time(), &none))).unwrap();
        for field in [
            "method",
            "target",
            "protocol",
            "backend",
            "via",
            "referer",
            "user_agent",
        ] {
            assert!(v[field].is_null(), "{field} in {v}");
        }
        assert_eq!(v["reason"], "head_timeout");
    }
}
