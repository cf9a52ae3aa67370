//! The log lines README.md and docs/EXERCISES.md show are lines the code can write: each one is
//! checked against the format strings in src/ (and servers/src/, the demo servers), so a message
//! reworded in the code fails this test until the docs say it the same way.
//!
//! What counts as a sample log line:
//!
//! - a whole line, as the log has it: `2026-12-06T22:08:53.786Z INFO  loadbalancer::balance::backend:
//!   backend localhost:8082: ...`, in a code block or a code span. Its message must be one that
//!   the file of its target (`loadbalancer::balance::backend` is src/balance/backend.rs) can
//!   write whole, at that level;
//! - a code span that starts with a level, `` `WARN backend localhost:8082: unhealthy (...)` ``:
//!   the message, or a part of it (`` `INFO slow start over` ``), must be part of a line that
//!   some format string of that level can write;
//! - either one with the target `access` (`INFO access: 127.0.0.1 GET / 200 ...`): an access-log
//!   line in the plain format (src/logging/format.rs, `plain`).
//!
//! A code span that starts with a level word is read as a log line whatever it is meant to be:
//! a command such as Redis's `INFO` is written otherwise.
//!
//! A format string is a string literal of the code outside its unit tests: `"backend {}:
//! breaker open for {cooldown:?}: {} consecutive failures"`. A placeholder stands for any text,
//! none included, except a number's: `{:.1}` is a number with one decimal, `{:.0}` a whole one. The level of a
//! literal written by `log::warn!` and its kin is that level; one built with `format!` and
//! logged later may be logged at any level.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use regex::Regex;

/// A piece of a format string.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(Vec<char>),
    /// A placeholder: any text (`{why}` may be empty), or a number with this many decimals.
    Hole(Option<usize>),
}

/// One string literal of the code.
#[derive(Debug)]
struct Format {
    pieces: Vec<Piece>,
    /// The level it is logged at, when a log macro writes it.
    level: Option<&'static str>,
    /// The file it is in, from the repository's top.
    file: PathBuf,
}

impl Format {
    /// True when it has words, so that a line fitting it says something: `"{}"` or `", "`
    /// would fit anything.
    fn has_words(&self) -> bool {
        self.pieces.iter().any(|p| match p {
            Piece::Text(t) => t.iter().filter(|c| c.is_alphabetic()).count() >= 3,
            Piece::Hole(_) => false,
        })
    }

    /// True when it may make up a placeholder's text: it has words, or it only puts
    /// punctuation around one placeholder (`": {reasons}"`). One without words and with two
    /// placeholders (`"{} {}"`) would string any words together.
    fn may_fill(&self) -> bool {
        self.has_words()
            || self
                .pieces
                .iter()
                .filter(|p| matches!(p, Piece::Hole(_)))
                .count()
                == 1
    }
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// The pieces of a format string: `{{` and `}}` are braces, `{...}` a placeholder.
fn pieces(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('{', Some('{')) | ('}', Some('}')) => {
                chars.next();
                literal.push(c);
            }
            ('{', _) => {
                let spec: String = chars.by_ref().take_while(|c| *c != '}').collect();
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                let decimals = spec
                    .split_once(':')
                    .and_then(|(_, f)| f.strip_prefix('.'))
                    .and_then(|d| d.parse().ok());
                pieces.push(Piece::Hole(decimals));
            }
            _ => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    pieces
}

/// The string literals of `source` (a Rust file) outside comments and its unit tests, each with
/// the level of the log macro it is the first argument of, if any.
fn literals(source: &str) -> Vec<(String, Option<&'static str>)> {
    let source = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(source);
    let bytes: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == '/' && bytes.get(i + 1) == Some(&'/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('"', '\'', '\\') or a lifetime: step over the quote and what a
            // char literal holds, so that its quote is not taken for a string's.
            i += match (bytes.get(i + 1), bytes.get(i + 2), bytes.get(i + 3)) {
                (Some('\\'), _, Some('\'')) => 4,
                (Some(_), Some('\''), _) => 3,
                _ => 1,
            };
        } else if c == '"' {
            let before: String = bytes[..i].iter().collect();
            let level = macro_level(&before);
            let mut text = String::new();
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                    match bytes.get(i) {
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        Some('\n') => {
                            // A line continuation: the next line's leading blanks go too.
                            while bytes.get(i + 1).is_some_and(|c| c.is_whitespace()) {
                                i += 1;
                            }
                        }
                        Some(other) => text.push(*other),
                        None => {}
                    }
                } else {
                    text.push(bytes[i]);
                }
                i += 1;
            }
            out.push((text, level));
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The level of the log macro whose first argument starts right after `before`, if any.
fn macro_level(before: &str) -> Option<&'static str> {
    let before = before.trim_end().strip_suffix("!(")?;
    let name: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    LEVELS
        .iter()
        .find(|l| l.eq_ignore_ascii_case(&name))
        .copied()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every format string of src/ and servers/src/.
fn formats() -> Vec<Format> {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    rust_files(&repo().join("servers/src"), &mut files);
    let mut formats = Vec::new();
    for file in files {
        let source = fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(repo()).unwrap().to_path_buf();
        for (text, level) in literals(&source) {
            formats.push(Format {
                pieces: pieces(&text),
                level,
                file: relative.clone(),
            });
        }
    }
    formats
}

/// How a sample must fit a format: whole, or any part of a line the format writes.
#[derive(Clone, Copy, PartialEq)]
enum Fit {
    Whole,
    Part,
}

/// How deep a placeholder's text may be made of other format strings: `unhealthy ({})` holds
/// `health check: {reason}`, which holds `status {status}`.
const DEPTH: usize = 3;

/// Fits samples to format strings, remembering which texts a placeholder may stand for.
struct Matcher<'a> {
    formats: &'a [Format],
    fillers: RefCell<HashMap<(String, usize), bool>>,
}

/// Where a fit is in a format string, and what it has matched so far.
#[derive(Clone, Copy)]
struct Cursor {
    /// Position in the sample.
    at: usize,
    /// The piece, and how far into it (a text piece).
    piece: usize,
    offset: usize,
    /// Characters of the sample matched by text pieces.
    literal: usize,
    /// How many of those a fit needs.
    need: usize,
}

impl Matcher<'_> {
    fn new(formats: &[Format]) -> Matcher<'_> {
        Matcher {
            formats,
            fillers: RefCell::new(HashMap::new()),
        }
    }

    /// True when a placeholder may stand for `text`: a number with `decimals` decimals if it
    /// says so; otherwise nothing, a word (a value: `503`, `localhost:8082`, `2s`), or what
    /// other format strings write, one or several joined by `, ` (a list of reasons), `depth`
    /// deep at most. So the text of a `{why}` is checked too, not taken as it comes.
    fn fills(&self, decimals: Option<usize>, text: &[char], depth: usize) -> bool {
        let text: String = text.iter().collect();
        if let Some(decimals) = decimals {
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            let unsigned = text.strip_prefix('-').unwrap_or(&text);
            return match unsigned.split_once('.') {
                None => decimals == 0 && digits(unsigned),
                Some((whole, fraction)) => {
                    digits(whole) && fraction.len() == decimals && digits(fraction)
                }
            };
        }
        self.written(&text, depth)
    }

    /// True when `text` is nothing, a word, or what format strings write (see [`Self::fills`]).
    fn written(&self, text: &str, depth: usize) -> bool {
        if !text.contains(char::is_whitespace) {
            return true;
        }
        if depth == 0 {
            return false;
        }
        let key = (text.to_string(), depth);
        if let Some(known) = self.fillers.borrow().get(&key) {
            return *known;
        }
        let one = |t: &str| {
            !t.contains(char::is_whitespace)
                || self
                    .formats
                    .iter()
                    .filter(|f| f.may_fill())
                    .any(|f| self.fits(t, &f.pieces, Fit::Whole, depth - 1, 1))
        };
        let written = one(text) || (text.contains(", ") && text.split(", ").all(one));
        self.fillers.borrow_mut().insert(key, written);
        written
    }

    /// True when the rest of `sample`, from `c`, fits the rest of `pieces`.
    fn fits_from(
        &self,
        sample: &[char],
        pieces: &[Piece],
        c: Cursor,
        fit: Fit,
        depth: usize,
    ) -> bool {
        if c.at == sample.len() {
            let ended = c.piece == pieces.len();
            // A part may end inside a text piece (`slow start over`), not where a placeholder
            // would have swallowed what follows.
            let after_text =
                c.offset > 0 || matches!(pieces.get(c.piece.wrapping_sub(1)), Some(Piece::Text(_)));
            let part = fit == Fit::Part && after_text;
            return (ended || part) && c.literal >= c.need;
        }
        match pieces.get(c.piece) {
            None => false,
            Some(Piece::Text(text)) => {
                if sample[c.at] != text[c.offset] {
                    return false;
                }
                let (piece, offset) = if c.offset + 1 == text.len() {
                    (c.piece + 1, 0)
                } else {
                    (c.piece, c.offset + 1)
                };
                let next = Cursor {
                    at: c.at + 1,
                    piece,
                    offset,
                    literal: c.literal + 1,
                    ..c
                };
                self.fits_from(sample, pieces, next, fit, depth)
            }
            Some(Piece::Hole(decimals)) => (c.at..=sample.len()).any(|end| {
                let next = Cursor {
                    at: end,
                    piece: c.piece + 1,
                    offset: 0,
                    ..c
                };
                self.fits_from(sample, pieces, next, fit, depth)
                    && self.fills(*decimals, &sample[c.at..end], depth)
            }),
        }
    }

    /// True when `sample` fits `pieces` as `fit` says, its placeholders' texts `depth` deep,
    /// with `need` of its characters matched by the format's text (not its placeholders).
    fn fits(&self, sample: &str, pieces: &[Piece], fit: Fit, depth: usize, need: usize) -> bool {
        let sample: Vec<char> = sample.chars().collect();
        let from = |piece: usize, offset: usize| {
            let c = Cursor {
                at: 0,
                piece,
                offset,
                literal: 0,
                need,
            };
            self.fits_from(&sample, pieces, c, fit, depth)
        };
        if fit == Fit::Whole {
            return from(0, 0);
        }
        // A part starts anywhere in a text piece, or where a placeholder starts.
        pieces.iter().enumerate().any(|(p, piece)| match piece {
            Piece::Text(text) => (0..text.len()).any(|offset| from(p, offset)),
            Piece::Hole(_) => from(p, 0),
        })
    }
}

/// An access-log line in the plain format (src/logging/format.rs, `plain`): `client method
/// target status backend duration bytes`, then `attempts=N via=A>B`, `reason=CODE`, `aborted`.
fn access_line(message: &str) -> bool {
    let plain = Regex::new(
        r"\A\S+ \S+ \S+ \d{3} \S+ \d+\.\dms \d+( attempts=\d+ via=\S+)?( reason=[a-z_]+)?( aborted)?\z",
    )
    .unwrap();
    plain.is_match(message)
}

/// A sample log line found in a document.
#[derive(Debug)]
struct Sample {
    /// `FILE:LINE`.
    at: String,
    level: String,
    /// The target, for a whole line.
    target: Option<String>,
    message: String,
}

/// The sample log lines of the markdown `text` (see the module documentation).
fn samples(name: &str, text: &str) -> Vec<Sample> {
    let whole = Regex::new(
        r"(?m)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN|INFO|DEBUG|TRACE) +([A-Za-z_:]+): ([^`\n]*)",
    )
    .unwrap();
    let span = Regex::new(r"`(ERROR|WARN|INFO|DEBUG|TRACE) ([^`]+)`").unwrap();
    let line_of = |offset: usize| format!("{name}:{}", text[..offset].lines().count().max(1));
    let mut found = Vec::new();
    for c in whole.captures_iter(text) {
        found.push(Sample {
            at: line_of(c.get(0).unwrap().start()),
            level: c[1].to_string(),
            target: Some(c[2].to_string()),
            message: c[3].trim_end().to_string(),
        });
    }
    for c in span.captures_iter(text) {
        // A span broken over two lines of the markdown reads as one line.
        let message = c[2].split_whitespace().collect::<Vec<_>>().join(" ");
        found.push(Sample {
            at: line_of(c.get(0).unwrap().start()),
            level: c[1].to_string(),
            target: None,
            message,
        });
    }
    found
}

/// The source files a target's lines come from: `loadbalancer::balance::backend` is
/// src/balance/backend.rs (or its `mod.rs`), `loadbalancer` main.rs and lib.rs, `servers` the
/// demo servers.
fn files_of(target: &str) -> Vec<PathBuf> {
    let mut parts = target.split("::");
    let krate = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let root = match krate {
        "loadbalancer" => PathBuf::from("src"),
        "servers" => PathBuf::from("servers/src"),
        _ => return Vec::new(),
    };
    if rest.is_empty() {
        return vec![root.join("main.rs"), root.join("lib.rs")];
    }
    let module = rest.iter().collect::<PathBuf>();
    vec![
        root.join(&module).with_extension("rs"),
        root.join(&module).join("mod.rs"),
    ]
}

/// Why `sample` is not a line the code writes, or `None` when it is.
fn check(sample: &Sample, matcher: &Matcher) -> Option<String> {
    let formats = matcher.formats;
    let is_access = sample.target.as_deref() == Some("access")
        || (sample.target.is_none() && sample.message.starts_with("access: "));
    if is_access {
        let message = sample
            .message
            .strip_prefix("access: ")
            .unwrap_or(&sample.message);
        return (!(sample.level == "INFO" && access_line(message)))
            .then(|| "not an access-log line in the plain format, at INFO".to_string());
    }
    let files = sample.target.as_deref().map(files_of);
    let candidates = formats.iter().filter(|f| {
        f.has_words()
            && f.level.is_none_or(|l| l == sample.level)
            && files.as_ref().is_none_or(|fs| fs.contains(&f.file))
    });
    let fit = if sample.target.is_some() {
        Fit::Whole
    } else {
        Fit::Part
    };
    let mut candidates = candidates.peekable();
    if candidates.peek().is_none() {
        return Some(format!("no format string in {files:?}"));
    }
    // Most of a short sample, 8 characters of a longer one, must be the format's own text.
    let need = sample.message.chars().count().min(8);
    let fitting = candidates.any(|f| matcher.fits(&sample.message, &f.pieces, fit, DEPTH, need));
    (!fitting).then(|| "no format string of the code writes it".to_string())
}

fn documents() -> Vec<(&'static str, String)> {
    ["README.md", "docs/EXERCISES.md"]
        .into_iter()
        .map(|name| (name, fs::read_to_string(repo().join(name)).unwrap()))
        .collect()
}

#[test]
fn every_sample_log_line_of_the_docs_is_one_the_code_writes() {
    let formats = formats();
    let matcher = Matcher::new(&formats);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (name, text) in documents() {
        for sample in samples(name, &text) {
            checked += 1;
            if let Some(why) = check(&sample, &matcher) {
                wrong.push(format!(
                    "{}: `{} {}`: {why} (a code span that starts with a level is read as a \
                     log line: write it otherwise if it is not one)",
                    sample.at, sample.level, sample.message
                ));
            }
        }
    }
    assert!(checked >= 20, "only {checked} sample log lines found");
    assert!(
        wrong.is_empty(),
        "sample log lines that drifted from the code:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_matcher_tells_a_drifted_sample_from_a_true_one() {
    let format = |text: &str| Format {
        pieces: pieces(text),
        level: None,
        file: PathBuf::new(),
    };
    let formats = [
        format("backend {}: breaker open for {cooldown:?}: {} consecutive failures"),
        format("backend {}: effective weight {} -> {share} of weight {weight}{why}"),
        format("latency {latency:.1} ms over the {band:.1} ms band (x{:.2})"),
        format("kept at the {:.0}% floor"),
        format(": {reasons}"),
    ];
    let m = Matcher::new(&formats);
    let fits = |sample: &str, i: usize, fit: Fit| m.fits(sample, &formats[i].pieces, fit, DEPTH, 8);
    let whole = "backend localhost:8082: breaker open for 2s: 3 consecutive failures";
    assert!(fits(whole, 0, Fit::Whole));
    assert!(fits(whole, 0, Fit::Part));
    assert!(fits(
        "breaker open for 2s: 3 consecutive failures",
        0,
        Fit::Part
    ));
    assert!(fits("backend localhost:8082: breaker open", 0, Fit::Part));
    assert!(!fits(
        "breaker open for 2s: 3 failures in a row",
        0,
        Fit::Part
    ));
    assert!(!fits("breaker open for 2s", 0, Fit::Whole));
    // A placeholder does not swallow a tail that the format does not have.
    assert!(!fits(
        "backend localhost:8082: breaker open for 2s: 3 consecutive",
        0,
        Fit::Whole
    ));
    // A placeholder's text is made of other format strings, or is a word.
    let moved = "backend localhost:8082: effective weight 10% -> 5% of weight 1: ";
    let reasons = "latency 86.9 ms over the 10.4 ms band (x0.01), kept at the 5% floor";
    assert!(fits(&format!("{moved}{reasons}"), 1, Fit::Whole));
    assert!(fits(
        "backend a:1: effective weight 100% -> 52% of weight 2",
        1,
        Fit::Whole
    ));
    let drifted = "latency 86.9 ms over the 10.4 ms band (x0.01), held at the 5% floor";
    assert!(!fits(&format!("{moved}{drifted}"), 1, Fit::Whole));
    assert!(!fits(
        "latency 38 ms over the 12.1 ms band (x0.10)",
        2,
        Fit::Whole
    ));
    assert!(access_line(
        "127.0.0.1 GET / 200 localhost:8081 0.4ms 51 attempts=2 via=a>b"
    ));
    assert!(!access_line("127.0.0.1 GET / 200 localhost:8081 0.4 ms 51"));
    let source = "log::warn!(\n    \"a {x} \\\n     b\", x);\nlet c = '\"'; // \"not\"\nformat!(\"c {{d}}\")";
    let found = literals(source);
    assert_eq!(
        found,
        [
            ("a {x} b".to_string(), Some("WARN")),
            ("c {{d}}".to_string(), None)
        ]
    );
}
