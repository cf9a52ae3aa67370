//! Wall-clock time as log lines write it: UTC, read from the system clock, in the three shapes
//! the logs use.
//!
//! Example: 1 764 091 988.123 s after the Unix epoch is [`Utc`] 2025-11-25 17:33:08.123, written
//! `2025-11-25T17:33:08.123Z` ([`Utc::millis`]), `2025-11-25T17:33:08Z` ([`Utc::seconds`]) or
//! `25/Nov/2025:17:33:08 +0000` ([`Utc::common_log`], nginx's `$time_local` for a server on UTC).

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::decimal::push_num;

/// A moment split into its calendar fields, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    year: i64,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    milli: u16,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Utc {
    /// Now, from the system clock.
    pub fn now() -> Utc {
        Utc::at(SystemTime::now())
    }

    /// `t` in calendar fields; a time before 1970 counts as the epoch.
    pub fn at(t: SystemTime) -> Utc {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        // Howard Hinnant's civil_from_days: days since 1970-01-01 to year, month and day in the
        // proleptic Gregorian calendar, with March as the first month of the computing year so
        // that the leap day comes last.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            milli: since.subsec_millis() as u16,
        }
    }

    /// RFC 3339 with milliseconds: `2025-11-25T17:33:08.123Z` (every log line starts so).
    pub fn millis(self) -> Shaped {
        Shaped(self, Shape::Millis)
    }

    /// RFC 3339 to the second: `2025-11-25T17:33:08Z`.
    pub fn seconds(self) -> Shaped {
        Shaped(self, Shape::Seconds)
    }

    /// The Common Log Format's time, as nginx writes `$time_local`: `25/Nov/2025:17:33:08 +0000`.
    pub fn common_log(self) -> Shaped {
        Shaped(self, Shape::CommonLog)
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Millis,
    Seconds,
    CommonLog,
}

/// A time in one of its shapes: [`Shaped::write`] appends it to a log line (every line has one,
/// so it is written digit by digit, not through `format!`: a quarter of a line's cost otherwise);
/// `Display` gives the same text.
#[derive(Clone, Copy)]
pub struct Shaped(Utc, Shape);

impl Shaped {
    /// Appends the text to `out`.
    pub fn write(self, out: &mut impl Write) {
        let Utc {
            year,
            month,
            day,
            hour,
            minute,
            second,
            milli,
        } = self.0;
        // Every field but the year has two digits (the milliseconds three): written as bytes.
        let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
        let [h1, h0] = two(hour);
        let [m1, m0] = two(minute);
        let [s1, s0] = two(second);
        let clock = [h1, h0, b':', m1, m0, b':', s1, s0];
        let [d1, d0] = two(day);
        let year = year.clamp(0, 9999) as u64;
        let _ = match self.1 {
            Shape::CommonLog => {
                let _ = out.write_all(&[d1, d0, b'/']);
                let _ = out.write_all(MONTHS[usize::from(month - 1)].as_bytes());
                let _ = out.write_all(b"/");
                push_num(out, year, 4);
                let _ = out.write_all(b":");
                let _ = out.write_all(&clock);
                out.write_all(b" +0000")
            }
            shape => {
                let [mo1, mo0] = two(month);
                push_num(out, year, 4);
                let _ = out.write_all(&[b'-', mo1, mo0, b'-', d1, d0, b'T']);
                let _ = out.write_all(&clock);
                if let Shape::Millis = shape {
                    let [c1, c0] = two((milli / 10) as u8);
                    let _ = out.write_all(&[b'.', c1, c0, b'0' + (milli % 10) as u8]);
                }
                out.write_all(b"Z")
            }
        };
    }
}

impl fmt::Display for Shaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 32];
        let mut rest = &mut text[..];
        self.write(&mut rest);
        let len = 32 - rest.len();
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> Utc {
        Utc::at(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
    }

    #[test]
    fn the_three_shapes() {
        let t = at(1_764_091_988, 123);
        assert_eq!(t.millis().to_string(), "2025-11-25T17:33:08.123Z");
        assert_eq!(t.seconds().to_string(), "2025-11-25T17:33:08Z");
        assert_eq!(t.common_log().to_string(), "25/Nov/2025:17:33:08 +0000");
        assert_eq!(at(0, 7).millis().to_string(), "1970-01-01T00:00:00.007Z");
    }

    #[test]
    fn calendar_edges() {
        assert_eq!(
            at(1_700_000_000, 0).seconds().to_string(),
            "2023-11-14T22:13:20Z"
        );
        // The leap day of a year divisible by 400, and the day after.
        assert_eq!(
            at(951_782_400, 0).seconds().to_string(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            at(951_868_800, 0).common_log().to_string(),
            "01/Mar/2000:00:00:00 +0000"
        );
        assert_eq!(
            at(1_798_761_599, 999).millis().to_string(),
            "2026-12-31T23:59:59.999Z"
        );
        assert_eq!(
            at(253_402_300_799, 0).seconds().to_string(),
            "9999-12-31T23:59:59Z"
        );
        // Before the epoch: the epoch.
        let before = Utc::at(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(before, at(0, 0));
    }
}
