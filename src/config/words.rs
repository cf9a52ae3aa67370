//! The words of the config file and the flags: durations (`250ms`, `2s`, `1m`), sizes (`512B`,
//! `8KiB`, `10MiB`), whole numbers, `on`/`off`, addresses and `name=value` pairs. Durations and
//! sizes are read and written by one table-driven pair of functions, so `--check` prints what
//! the parser reads back.

use std::net::ToSocketAddrs;
use std::time::Duration;

/// A key of the config file: its name, whether it may stand on several lines, and the function
/// that applies its words to a `T` (the [`Config`](super::Config), or its filter part). The
/// keys' tables are the grammar, and the list a mistyped key is matched against.
pub(crate) struct Key<T> {
    /// The key, e.g. `listen`.
    pub name: &'static str,
    /// It may stand on several lines (`backend`, `deny`): each adds to the setting.
    pub repeatable: bool,
    /// Applies the line's words. Its errors do not name the key: the caller puts
    /// `file:line: key: ` in front.
    pub apply: fn(&mut T, &[&str]) -> Result<(), String>,
}

impl<T> Key<T> {
    /// A key given at most once.
    pub const fn once(
        name: &'static str,
        apply: fn(&mut T, &[&str]) -> Result<(), String>,
    ) -> Self {
        Key {
            name,
            repeatable: false,
            apply,
        }
    }

    /// A key that may stand on several lines.
    pub const fn repeatable(
        name: &'static str,
        apply: fn(&mut T, &[&str]) -> Result<(), String>,
    ) -> Self {
        Key {
            name,
            repeatable: true,
            apply,
        }
    }
}

/// The units of a duration, in milliseconds, largest last.
const DURATION_UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];

/// The units of a size, in bytes, largest last.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// Reads `digits unit` with `unit` from `units`; errors name `what` (`duration`, `size`).
fn parse_unit(s: &str, units: &[(&str, u64)], what: &str) -> Result<u64, String> {
    let names: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "bad {what} {s:?}: expected a number and a unit ({})",
            names.join(", ")
        )
    })?;
    let Some((_, mult)) = units.iter().find(|(u, _)| *u == unit) else {
        let (last, rest) = names.split_last().expect("units");
        return Err(format!(
            "bad {what} {s:?}: unit must be {} or {last}",
            rest.join(", ")
        ));
    };
    n.checked_mul(*mult)
        .ok_or_else(|| format!("{what} {s:?} is too large"))
}

/// Writes `n` in the largest of `units` that states it exactly (the smallest unit for 0).
fn format_unit(n: u64, units: &[(&str, u64)]) -> String {
    let (unit, mult) = units
        .iter()
        .rev()
        .find(|(_, m)| n > 0 && n.is_multiple_of(*m))
        .unwrap_or(&units[0]);
    format!("{}{unit}", n / mult)
}

/// Parses a duration with a unit: `250ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_unit(s, DURATION_UNITS, "duration").map(Duration::from_millis)
}

/// Parses a size with a unit: `512B`, `8KiB`, `10MiB`, `1GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_unit(s, SIZE_UNITS, "size")
}

/// Writes a duration in the largest unit that states it exactly: `250ms`, `2s`, `5m`, `1h`
/// (`0s` for zero).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    format_unit(
        d.as_millis().min(u128::from(u64::MAX)) as u64,
        DURATION_UNITS,
    )
}

/// Writes a size in the largest unit that states it exactly: `512B`, `8KiB`, `10MiB`, `1GiB`.
pub fn format_size(n: u64) -> String {
    format_unit(n, SIZE_UNITS)
}

/// Parses a whole number in `min..=max` (digits only: no sign); errors name `what`.
pub(crate) fn parse_count(s: &str, what: &str, min: u64, max: u64) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "{what} must be a whole number in {min}..{max}, not {s:?}"
        )),
    }
}

pub(crate) fn parse_on_off(s: &str, what: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{what} must be on or off, not {s:?}")),
    }
}

/// Checks that a listen address has the `host:port` shape and resolves.
pub fn check_addr(s: &str) -> Result<String, String> {
    let resolves = s.to_socket_addrs().is_ok_and(|mut a| a.next().is_some());
    if resolves {
        Ok(s.to_string())
    } else {
        Err(format!(
            "bad address {s:?}: expected host:port, e.g. 0.0.0.0:8080"
        ))
    }
}

/// Splits `name=value` words; `allowed` lists the names this key takes. A name given twice, or
/// one not allowed, is an error.
pub(crate) fn pairs<'a>(
    words: &[&'a str],
    allowed: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("expected name=value, found {w:?}"))?;
        if !allowed.contains(&k) {
            let hint = did_you_mean(k, allowed.iter().copied())
                .map(|m| format!(": did you mean {m}?"))
                .unwrap_or_default();
            return Err(format!(
                "unknown option {k:?}{hint} (expected one of: {})",
                allowed.join(", ")
            ));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("option {k:?} is given twice"));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// The word of `known` that `word` is most likely a typo of: the closest in edit distance
/// (inserting, deleting or changing a letter, or swapping two neighbours, each count one), when
/// it is within a third of the word's length (at least 1). `None` when nothing is that close:
/// a wrong suggestion would mislead more than none.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (edit_distance(word, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The optimal string alignment distance between `a` and `b`, ignoring case: the edits
/// [`did_you_mean`] counts. Dynamic programming over three rows of the usual table.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // before[j], row[j], next[j]: the distance between the first i-1, i, i+1 letters of `a`
    // and the first j letters of `b`.
    let mut before: Vec<usize> = Vec::new();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut next = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let change = usize::from(a[i - 1] != b[j - 1]);
            next[j] = (row[j] + 1).min(next[j - 1] + 1).min(row[j - 1] + change);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                next[j] = next[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut row, next);
    }
    row[b.len()]
}

/// Parses a size in `min..=max` bytes; errors name `what`.
pub(crate) fn parse_size_in(s: &str, what: &str, min: u64, max: u64) -> Result<usize, String> {
    let n = parse_size(s)?;
    if !(min..=max).contains(&n) {
        return Err(format!(
            "{what} must be between {min} and {max} bytes, not {s}"
        ));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_back_what_they_write() {
        for (text, ms) in [
            ("250ms", 250),
            ("2s", 2000),
            ("5m", 300_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)));
            assert_eq!(format_duration(Duration::from_millis(ms)), text);
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        for (text, n) in [
            ("512B", 512),
            ("8KiB", 8192),
            ("10MiB", 10 << 20),
            ("1GiB", 1 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(n));
            assert_eq!(format_size(n), text);
        }
        assert!(parse_duration("2x")
            .unwrap_err()
            .contains("unit must be ms, s, m or h"));
        assert!(parse_size("2")
            .unwrap_err()
            .contains("unit must be B, KiB, MiB or GiB"));
        assert!(parse_size("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn typos_find_the_word_meant() {
        assert_eq!(edit_distance("workrs", "workers"), 1);
        assert_eq!(edit_distance("wokrers", "workers"), 1, "a swap is one edit");
        assert_eq!(edit_distance("Workers", "workers"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let keys = ["workers", "queue", "timeouts", "listen"];
        assert_eq!(did_you_mean("workrs", keys), Some("workers"));
        assert_eq!(did_you_mean("timeout", keys), Some("timeouts"));
        assert_eq!(did_you_mean("qeue", keys), Some("queue"));
        // Too far from anything: no guess.
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(did_you_mean("x", keys), None);
    }
}
