//! The `shared` line: the Redis server where several balancers keep the rate limits and bans
//! marked `shared=on`, and what a balancer does when that server is slow or away.
//!
//! ```text
//! shared     redis=redis://:SECRET@127.0.0.1:6379/0 prefix=lb: timeout=5ms connect_timeout=100ms fallback=local instances=auto
//! rate_limit rate=10/s burst=10 shared=on
//! ban        after=5 window=1m duration=10m shared=on
//! ```
//!
//! Only `redis=` is required. The URL is `redis://[USER][:PASSWORD@]HOST[:PORT][/DB]` (port 6379
//! and database 0 by default; `%XX` escapes in the user and password are decoded). The password
//! is a secret: it is printed as [`HIDDEN_PASSWORD`] by `--check`, in logs and in `/status`
//! ([`SharedConfig::redacted_url`]), and is sent to Redis only.

use std::fmt;
use std::time::Duration;

use super::words::{format_duration, pairs, parse_count, parse_duration};

/// How a hidden password is written (`--check`, logs, `/status`).
pub const HIDDEN_PASSWORD: &str = "********";

/// What a balancer does with a shared limit while Redis does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Each balancer limits on its own, at the shared rate divided by the number of instances
    /// (and the burst likewise), so that together they stay near the limit. The default.
    Local,
    /// Every request a shared limit would check is admitted (Envoy, Kong).
    Open,
    /// Every request a shared limit would check gets 503 with a `Retry-After`.
    Closed,
}

impl Fallback {
    /// The word in the config file and in `/status`.
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Local => "local",
            Fallback::Open => "open",
            Fallback::Closed => "closed",
        }
    }
}

/// How many balancers share the limits, for [`Fallback::Local`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instances {
    /// Counted from the balancers' heartbeats in Redis (the last count seen before Redis went
    /// away; 1 if it never answered). The default.
    Auto,
    /// Set by hand.
    Fixed(u32),
}

/// The `shared` line.
#[derive(Clone)]
pub struct SharedConfig {
    /// Redis host (a name or an IP literal, IPv6 without brackets).
    pub host: String,
    /// Redis port. Default 6379.
    pub port: u16,
    /// Redis database. Default 0.
    pub db: u32,
    /// ACL user name, if any.
    pub username: Option<String>,
    /// Password, if any: never printed (see [`SharedConfig::redacted_url`]).
    pub password: Option<String>,
    /// `prefix=`: the start of every key the balancer writes. Default `lb:`.
    pub prefix: String,
    /// `timeout=`: the longest one Redis call may take (read and write timeouts, set on every
    /// connection); a request waits at most about this long for its shared check. Default 5 ms.
    pub timeout: Duration,
    /// `connect_timeout=`: the longest a connection (TCP, AUTH, SELECT) may take. Default 100 ms.
    pub connect_timeout: Duration,
    /// `fallback=`: what happens while Redis does not answer. Default [`Fallback::Local`].
    pub fallback: Fallback,
    /// `instances=`: how many balancers share the limits. Default [`Instances::Auto`].
    pub instances: Instances,
    /// `file:line` of the line, when it came from a file: a problem found only when connecting
    /// (a wrong password) names it.
    pub at: Option<String>,
}

/// Equal when the settings are: where the line was ([`SharedConfig::at`]) does not count.
impl PartialEq for SharedConfig {
    fn eq(&self, o: &SharedConfig) -> bool {
        (
            &self.host,
            self.port,
            self.db,
            &self.username,
            &self.password,
            &self.prefix,
        ) == (&o.host, o.port, o.db, &o.username, &o.password, &o.prefix)
            && (
                self.timeout,
                self.connect_timeout,
                self.fallback,
                self.instances,
            ) == (o.timeout, o.connect_timeout, o.fallback, o.instances)
    }
}

impl Eq for SharedConfig {}

/// Debug without the password.
impl fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConfig")
            .field("redis", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("fallback", &self.fallback)
            .field("instances", &self.instances)
            .finish()
    }
}

/// Default Redis port.
const DEFAULT_PORT: u16 = 6379;

impl SharedConfig {
    /// Reads the words of a `shared` line.
    pub fn parse(words: &[&str]) -> Result<SharedConfig, String> {
        let names = [
            "redis",
            "prefix",
            "timeout",
            "connect_timeout",
            "fallback",
            "instances",
        ];
        let mut config = None;
        let mut rest = Vec::new();
        for (k, v) in pairs(words, &names)? {
            if k == "redis" {
                config = Some(parse_url(v)?);
            } else {
                rest.push((k, v));
            }
        }
        let mut c = config.ok_or(
            "redis= is required, e.g. shared redis=redis://127.0.0.1:6379/0 (a password goes in \
             as redis://:PASSWORD@host:port/db)",
        )?;
        for (k, v) in rest {
            match k {
                "prefix" => {
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'{') {
                        return Err(format!(
                            "prefix must be printable characters without {{ (Redis hash tags), not {v:?}"
                        ));
                    }
                    c.prefix = v.to_string();
                }
                "timeout" | "connect_timeout" => {
                    let d = parse_duration(v)?;
                    if d.is_zero() || d > Duration::from_secs(10) {
                        return Err(format!("{k} must be more than zero and at most 10s"));
                    }
                    if k == "timeout" {
                        c.timeout = d;
                    } else {
                        c.connect_timeout = d;
                    }
                }
                "fallback" => {
                    c.fallback = match v {
                        "local" => Fallback::Local,
                        "open" => Fallback::Open,
                        "closed" => Fallback::Closed,
                        _ => {
                            return Err(format!(
                                "fallback must be local, open or closed, not {v:?}"
                            ))
                        }
                    }
                }
                _ => {
                    c.instances =
                        match v {
                            "auto" => Instances::Auto,
                            n => Instances::Fixed(parse_count(n, "instances", 1, 1000).map_err(
                                |e| format!("{e} (or auto: counted from the heartbeats)"),
                            )? as u32),
                        }
                }
            }
        }
        Ok(c)
    }

    /// The URL with the password replaced by [`HIDDEN_PASSWORD`]: what logs, `--check` and
    /// `/status` show.
    pub fn redacted_url(&self) -> String {
        let user = self.username.as_deref().unwrap_or("");
        let auth = match (&self.username, &self.password) {
            (None, None) => String::new(),
            (_, None) => format!("{user}@"),
            (_, Some(_)) => format!("{user}:{HIDDEN_PASSWORD}@"),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{auth}{host}:{}/{}", self.port, self.db)
    }
}

/// Reads `redis://[USER][:PASSWORD@]HOST[:PORT][/DB]`. Errors never repeat the password.
fn parse_url(url: &str) -> Result<SharedConfig, String> {
    let scheme_end = url.find("://");
    let rest = match url.strip_prefix("redis://") {
        Some(rest) => rest,
        None => {
            let scheme = scheme_end.map_or("", |at| &url[..at]);
            return Err(match scheme {
                "rediss" | "valkeys" => "rediss:// (TLS) is not supported: use redis:// on a \
                                         trusted network, or a TLS tunnel (stunnel) on this \
                                         machine"
                    .to_string(),
                "unix" | "redis+unix" => {
                    "a Unix socket is not supported: use redis://HOST:PORT".to_string()
                }
                "" => "the Redis URL must start with redis://, e.g. redis://127.0.0.1:6379/0"
                    .to_string(),
                other => format!(
                    "the Redis URL must start with redis://, not {other}://, e.g. \
                     redis://127.0.0.1:6379/0"
                ),
            });
        }
    };
    // The user part ends at the last `@` (a password may contain `@` written as %40).
    let (auth, location) = match rest.rsplit_once('@') {
        Some((auth, location)) => (Some(auth), location),
        None => (None, rest),
    };
    let (username, password) = match auth {
        None => (None, None),
        Some(auth) => {
            let (user, pass) = match auth.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (auth, None),
            };
            let decode = |s: &str| {
                String::from_utf8(crate::percent::decode(s.as_bytes(), |b| b))
                    .map_err(|_| "the Redis user or password is not UTF-8 once decoded".to_string())
            };
            let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
            let pass = pass.filter(|p| !p.is_empty()).map(decode).transpose()?;
            (user, pass)
        }
    };
    let (hostport, db) = match location.split_once('/') {
        Some((hostport, db)) => (hostport, db),
        None => (location, ""),
    };
    let db = match db {
        "" => 0,
        db => parse_count(db, "the Redis database (after the /)", 0, 10_000)? as u32,
    };
    let (host, port) = split_host_port(hostport).ok_or_else(|| {
        format!("the Redis URL needs HOST[:PORT] after redis:// (and the user), not {hostport:?}")
    })?;
    Ok(SharedConfig {
        host,
        port,
        db,
        username,
        password,
        prefix: "lb:".into(),
        timeout: Duration::from_millis(5),
        connect_timeout: Duration::from_millis(100),
        fallback: Fallback::Local,
        instances: Instances::Auto,
        at: None,
    })
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => DEFAULT_PORT,
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    valid.then(|| (host.to_string(), port))
}

/// The line in the config-file grammar, the password hidden.
impl fmt::Display for SharedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let instances = match self.instances {
            Instances::Auto => "auto".to_string(),
            Instances::Fixed(n) => n.to_string(),
        };
        write!(
            f,
            "shared redis={} prefix={} timeout={} connect_timeout={} fallback={} instances={instances}",
            self.redacted_url(),
            self.prefix,
            format_duration(self.timeout),
            format_duration(self.connect_timeout),
            self.fallback.name(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_defaults_and_options() {
        let c = SharedConfig::parse(&["redis=redis://127.0.0.1"]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.1", 6379, 0));
        assert_eq!((c.username.clone(), c.password.clone()), (None, None));
        assert_eq!(c.prefix, "lb:");
        assert_eq!(c.timeout, Duration::from_millis(5));
        assert_eq!(c.connect_timeout, Duration::from_millis(100));
        assert_eq!(
            (c.fallback, c.instances),
            (Fallback::Local, Instances::Auto)
        );
        let c = SharedConfig::parse(&[
            "redis=redis://app:p%40ss:w@[::1]:6380/3",
            "prefix=edge:",
            "timeout=20ms",
            "connect_timeout=1s",
            "fallback=closed",
            "instances=3",
        ])
        .unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("::1", 6380, 3));
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("p@ss:w"));
        assert_eq!(c.redacted_url(), "redis://app:********@[::1]:6380/3");
        assert_eq!(
            c.to_string(),
            "shared redis=redis://app:********@[::1]:6380/3 prefix=edge: timeout=20ms \
             connect_timeout=1s fallback=closed instances=3"
        );
        assert!(!format!("{c:?}").contains("p@ss"));
        let c = SharedConfig::parse(&["redis=redis://:s3cret@localhost:7000/1"]).unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (None, Some("s3cret"))
        );
        assert_eq!(c.redacted_url(), "redis://:********@localhost:7000/1");
    }

    #[test]
    fn bad_lines_say_what_is_wrong_without_the_password() {
        let err = |words: &[&str]| SharedConfig::parse(words).unwrap_err();
        assert!(err(&["prefix=x"]).starts_with("redis= is required"));
        assert!(
            err(&["redis=http://127.0.0.1:6379"]).contains("must start with redis://, not http://")
        );
        assert!(err(&["redis=127.0.0.1:6379"]).contains("must start with redis://"));
        assert!(err(&["redis=rediss://h:1"]).contains("TLS) is not supported"));
        let e = err(&["redis=redis://:topsecret@"]);
        assert!(
            e.contains("needs HOST[:PORT]") && !e.contains("topsecret"),
            "{e}"
        );
        assert!(err(&["redis=redis://h:0"]).contains("needs HOST[:PORT]"));
        assert!(err(&["redis=redis://h/x"]).contains("the Redis database"));
        assert!(err(&["redis=redis://h", "fallback=maybe"]).contains("local, open or closed"));
        assert!(err(&["redis=redis://h", "instances=0"]).contains("instances must be"));
        assert!(err(&["redis=redis://h", "timeout=0ms"]).contains("more than zero"));
        assert!(err(&["redis=redis://h", "prefix=a{b"]).contains("without {"));
        assert!(err(&["redis=redis://h", "fallbak=open"]).contains("did you mean fallback?"));
    }
}
