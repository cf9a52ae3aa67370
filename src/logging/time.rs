//! Wall-clock time as log lines write it: UTC, read from the system clock, in the three shapes
//! the logs use.
//!
//! Example: 1 764 091 988.123 s after the Unix epoch is [`Utc`] 2025-11-25 17:33:08.123, written
//! `2025-11-25T17:33:08.123Z` ([`Utc::millis`]), `2025-11-25T17:33:08Z` ([`Utc::seconds`]) or
//! `25/Nov/2025:17:33:08 +0000` ([`Utc::common_log`], nginx's `$time_local` for a server on UTC).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

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
    pub fn millis(self) -> impl fmt::Display {
        Shape(self, Kind::Millis)
    }

    /// RFC 3339 to the second: `2025-11-25T17:33:08Z`.
    pub fn seconds(self) -> impl fmt::Display {
        Shape(self, Kind::Seconds)
    }

    /// The Common Log Format's time, as nginx writes `$time_local`: `25/Nov/2025:17:33:08 +0000`.
    pub fn common_log(self) -> impl fmt::Display {
        Shape(self, Kind::CommonLog)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Millis,
    Seconds,
    CommonLog,
}

struct Shape(Utc, Kind);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Utc {
            year,
            month,
            day,
            hour,
            minute,
            second,
            milli,
        } = self.0;
        match self.1 {
            Kind::Millis => write!(
                f,
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
            ),
            Kind::Seconds => write!(
                f,
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"
            ),
            Kind::CommonLog => write!(
                f,
                "{day:02}/{}/{year:04}:{hour:02}:{minute:02}:{second:02} +0000",
                MONTHS[usize::from(month - 1)]
            ),
        }
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
        // Before the epoch: the epoch.
        let before = Utc::at(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(before, at(0, 0));
    }
}
