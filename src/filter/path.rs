//! Paths: what part of a request target `deny_path` and `rate_limit path=` look at, and how.
//!
//! A rule names a path prefix such as `/admin`. Two things make matching it harder than
//! `starts_with`:
//!
//! - **Spelling.** A backend decodes `%61dmin` to `admin`, reads `//admin` and `/x/../admin` as
//!   `/admin`, and some read `\` as `/`. If the filter compared the raw target, each of these
//!   would walk past `deny_path /admin`. So the path is first normalised the way a backend would
//!   read it ([`normalize_path`]), and only then compared.
//! - **Segments.** `/admin` must match `/admin` and `/admin/users`, but not `/administrator`: a
//!   prefix matches on whole path segments ([`segment_prefix`]).
//!
//! The query (`?...`) and fragment (`#...`) are never part of the path (see
//! [`RequestHead::path`](crate::http::RequestHead::path), where the target is split). Configured
//! prefixes are plain decoded paths without a trailing `/` (the config grammar checks this), so
//! they need no normalising themselves.

use std::borrow::Cow;

/// The path as a backend would see it, for prefix matching: `%XX` escapes decoded, `\` read as
/// `/`, empty and `.` segments dropped, `..` segments applied. So `/%2egit/config`,
/// `//.git/config` and `/x/../.git/config` all match `deny_path /.git`. Paths that need none of
/// this (the usual case) are borrowed, not copied.
pub(super) fn normalize_path(path: &str) -> Cow<'_, [u8]> {
    let b = path.as_bytes();
    let plain = !b.contains(&b'%')
        && !b.contains(&b'\\')
        && path.split('/').skip(1).all(|seg| seg != "." && seg != "..")
        && !path.contains("//");
    if plain {
        return Cow::Borrowed(b);
    }
    let decoded = crate::percent::decode(b, |c| if c == b'\\' { b'/' } else { c });
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|c| *c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(out)
}

/// True when `prefix` matches `path` on whole segments: `/admin` matches `/admin` and
/// `/admin/x`, not `/administrator`; `/` matches everything.
pub(super) fn segment_prefix(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len() || prefix.ends_with(b"/") || path[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{cfg, code, get};
    use crate::filter::Filter;
    use std::time::Instant;

    #[test]
    fn deny_path_matches_whole_segments_of_the_decoded_path() {
        let f = Filter::new(cfg("deny_path /.git /admin\n"));
        let t = Instant::now();
        for (target, want) in [
            ("/admin", 403),
            ("/admin/", 403),
            ("/admin/x", 403),
            ("/admin?x=1", 403),
            ("/admin#frag", 403),
            ("/administrator", 200),
            ("/adminx/y", 200),
            ("/x/admin", 200),
            ("/?q=/admin", 200),
            ("/.git/config", 403),
            ("/.github/x", 200),
            ("/%2egit/config", 403),
            ("/%2Egit/config", 403),
            ("/%61dmin", 403),
            ("//admin", 403),
            ("/./admin", 403),
            ("/x/../admin/y", 403),
            ("/x/%2e%2e/admin", 403),
            ("/..\\admin", 403),
            ("/a%zzdmin", 200),
            ("/admin%", 200),
            ("/admin#frag", 403),
            ("/", 200),
        ] {
            assert_eq!(code(&f, &get("10.0.0.1", target), t), want, "{target}");
        }
        // An absolute-form target (`http://host/admin`) reaches the filter as its path: the
        // parser rewrites it (tests/front/conformance.rs, row r33).
        let all = Filter::new(cfg("deny_path /\n"));
        assert_eq!(code(&all, &get("10.0.0.1", "/anything"), t), 403);
        assert_eq!(code(&all, &get("10.0.0.1", "/"), t), 403);
    }

    #[test]
    fn normalized_paths() {
        let n = |p: &str| String::from_utf8(normalize_path(p).into_owned()).unwrap();
        assert!(matches!(normalize_path("/a/b.c/d"), Cow::Borrowed(_)));
        assert_eq!(n("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(n("/../.."), "/");
        assert_eq!(n("/a%2Fb"), "/a/b");
        assert_eq!(n("/a%"), "/a%");
        assert_eq!(n("/a%4"), "/a%4");
    }
}
