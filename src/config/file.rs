//! The config file's grammar: one setting per line, a key and its words; `#` starts a comment.
//! Every problem names the file and the line.

use std::path::Path;
use std::time::Duration;

use super::filter;
use super::words::{
    check_addr, did_you_mean, pairs, parse_count, parse_duration, parse_on_off, parse_size_in,
};
use super::{BackendConfig, Config, ConfigError};
use crate::logging::AccessFormat;

/// Applies one settings line (`key words...`) to `config`. Shared by the file parser and the
/// tests; `seen` catches keys given twice.
fn apply_line(config: &mut Config, key: &str, words: &[&str]) -> Result<(), String> {
    let one = |what: &str| -> Result<&str, String> {
        match words {
            [w] => Ok(*w),
            _ => Err(format!("{what} takes exactly one value")),
        }
    };
    match key {
        "listen" => config.listen = check_addr(one("listen")?)?,
        "admin" => {
            let mut words = words.iter();
            let addr = words.next().ok_or("admin takes an address or off")?;
            config.admin = if *addr == "off" {
                None
            } else {
                Some(check_addr(addr)?)
            };
            let rest: Vec<&str> = words.copied().collect();
            for (k, v) in pairs(&rest, &["token"])? {
                if k == "token" {
                    if v.is_empty() {
                        return Err("token must not be empty".into());
                    }
                    config.admin_token = Some(v.to_string());
                }
            }
        }
        "workers" => config.workers = parse_count(one("workers")?, "workers", 1, 4096)? as usize,
        "queue" => {
            let w = one("queue")?;
            config.queue = if w == "off" {
                None
            } else {
                Some(parse_count(w, "queue", 1, 10_000_000)? as usize)
            };
        }
        "timeouts" => {
            if words.is_empty() {
                return Err(
                    "timeouts takes connect=, response=, send=, client=, head=, body=, queue= \
                     and/or tunnel= durations"
                        .into(),
                );
            }
            let names = [
                "connect", "response", "send", "client", "head", "body", "queue", "tunnel",
            ];
            for (k, v) in pairs(words, &names)? {
                let d = parse_duration(v)?;
                if d.is_zero() {
                    return Err(format!("{k} timeout must be more than zero"));
                }
                match k {
                    "connect" => config.timeouts.connect = d,
                    "response" => config.timeouts.response = d,
                    "send" => config.timeouts.send = Some(d),
                    "head" => config.timeouts.head = d,
                    "body" => config.timeouts.body = d,
                    "queue" => config.timeouts.queue = d,
                    "tunnel" => config.timeouts.tunnel = d,
                    _ if d < Duration::from_secs(1) => {
                        return Err("client timeout must be at least 1s".into())
                    }
                    _ => config.timeouts.client = d,
                }
            }
        }
        "limits" => {
            if words.is_empty() {
                return Err(format!(
                    "expected one or more of {}",
                    LIMITS.map(|k| format!("{k}=")).join(", ")
                ));
            }
            // Check every name against the whole list first, so the error lists them all.
            pairs(words, &LIMITS)?;
            let (front, filtering): (Vec<&str>, Vec<&str>) = words
                .iter()
                .partition(|w| FRONT_LIMITS.iter().any(|k| w.starts_with(&format!("{k}="))));
            for (k, v) in pairs(&front, &FRONT_LIMITS)? {
                match k {
                    "max_request_line" => {
                        config.limits.max_request_line = parse_size_in(v, k, 256, 1 << 20)?
                    }
                    "max_head" => config.limits.max_head = parse_size_in(v, k, 1 << 10, 1 << 20)?,
                    "max_headers" => {
                        config.limits.max_headers = parse_count(v, "max_headers", 1, 1000)? as usize
                    }
                    "tunnels" => {
                        config.limits.tunnels = parse_count(v, "tunnels", 1, 10_000_000)? as usize
                    }
                    _ => {
                        config.limits.max_connections =
                            Some(parse_count(v, "max_connections", 1, 10_000_000)? as usize)
                    }
                }
            }
            if !filtering.is_empty() {
                config.filter.apply_line("limits", &filtering)?;
            }
        }
        "retries" => {
            let (n, rest) = words.split_first().ok_or("retries takes a count")?;
            config.retries.count = parse_count(n, "retries", 0, 10)? as u32;
            for (k, v) in pairs(rest, &["budget", "retry_timeouts"])? {
                if k == "retry_timeouts" {
                    config.retries.on_timeout = parse_on_off(v, "retry_timeouts")?;
                    continue;
                }
                let pct = v
                    .strip_suffix('%')
                    .ok_or_else(|| format!("budget must be a percentage like 20%, not {v:?}"))?;
                config.retries.budget_percent = parse_count(pct, "budget", 0, 100)? as u32;
            }
        }
        "health" => {
            if words == ["off"] {
                config.health.enabled = false;
                return Ok(());
            }
            let h = &mut config.health;
            h.enabled = true;
            for (k, v) in pairs(words, &["path", "interval", "timeout", "rise", "fall"])? {
                match k {
                    "path" if v.starts_with('/') => h.path = v.to_string(),
                    "path" => return Err(format!("health path must start with /, not {v:?}")),
                    "interval" | "timeout" => {
                        let d = parse_duration(v)?;
                        if d.is_zero() {
                            return Err(format!("health {k} must be more than zero"));
                        }
                        if k == "interval" {
                            h.interval = d
                        } else {
                            h.timeout = d
                        }
                    }
                    "rise" => h.rise = parse_count(v, "rise", 1, 100)? as u32,
                    _ => h.fall = parse_count(v, "fall", 1, 100)? as u32,
                }
            }
        }
        "breaker" => {
            let b = &mut config.breaker;
            for (k, v) in pairs(words, &["failures", "cooldown", "max_cooldown", "statuses"])? {
                match k {
                    "failures" => b.failures = parse_count(v, "failures", 1, 1000)? as u32,
                    "cooldown" => b.cooldown = parse_duration(v)?,
                    "max_cooldown" => b.max_cooldown = parse_duration(v)?,
                    _ => {
                        b.failure_statuses = v
                            .split(',')
                            .map(|s| parse_count(s, "status", 100, 599).map(|n| n as u16))
                            .collect::<Result<_, _>>()?
                    }
                }
            }
            if b.max_cooldown < b.cooldown {
                return Err("max_cooldown must not be less than cooldown".into());
            }
        }
        "slow_start" => {
            let w = one("slow_start")?;
            config.slow_start = if w == "off" {
                Duration::ZERO
            } else {
                parse_duration(w)?
            };
        }
        "access_log" => access_log(config, words)?,
        "explain" => config.explain = parse_on_off(one("explain")?, "explain")?,
        "upgrade" => config.upgrade = parse_upgrade(words)?,
        "drain_timeout" => config.drain_timeout = parse_duration(one("drain_timeout")?)?,
        "request_buffering" => {
            config.request_buffering = parse_on_off(one("request_buffering")?, "request_buffering")?
        }
        "buffers" => {
            if words.is_empty() {
                return Err(format!(
                    "buffers takes one or more of {}",
                    BUFFERS.map(|k| format!("{k}=")).join(", ")
                ));
            }
            let b = &mut config.buffers;
            for (k, v) in pairs(words, &BUFFERS)? {
                match k {
                    "memory" => b.memory = parse_size_in(v, k, 1 << 10, 1 << 30)?,
                    "memory_total" => {
                        b.memory_total = parse_size_in(v, k, 1 << 10, 1 << 40)? as u64
                    }
                    "temp_file" => b.temp_file = parse_size_in(v, k, 0, 1 << 50)? as u64,
                    "temp_total" => b.temp_total = parse_size_in(v, k, 0, 1 << 50)? as u64,
                    _ => {
                        let dir = Path::new(v);
                        if !dir.is_absolute() {
                            return Err(format!("temp_dir must be an absolute path, not {v:?}"));
                        }
                        b.temp_dir = dir.to_path_buf();
                    }
                }
            }
        }
        "backend" => {
            let (url, rest) = words.split_first().ok_or("backend takes a URL")?;
            let mut weight = 1;
            for (_, v) in pairs(rest, &["weight"])? {
                weight = parse_count(v, "weight", 1, 1000)? as u32;
            }
            let b = BackendConfig::parse(url, weight)?;
            if config.backends.iter().any(|x| x.url == b.url) {
                return Err(format!("backend {} is listed twice", b.url));
            }
            config.backends.push(b);
        }
        k if filter::KEYS.contains(&k) => config.filter.apply_line(k, words)?,
        _ => {
            let known = KEYS.iter().chain(filter::KEYS).copied();
            let hint = did_you_mean(key, known)
                .map(|k| format!(": did you mean {k}?"))
                .unwrap_or_default();
            return Err(format!("unknown setting {key:?}{hint}"));
        }
    }
    Ok(())
}

/// `access_log [on|off] [path=FILE] [format=plain|combined|json]`: at least one word; `path=` or
/// `format=` alone means on.
fn access_log(config: &mut Config, words: &[&str]) -> Result<(), String> {
    let (first, rest) = words
        .split_first()
        .ok_or("access_log takes on, off, path=FILE and/or format=plain|combined|json")?;
    let rest = if first.contains('=') {
        config.access_log = true;
        words
    } else {
        config.access_log = parse_on_off(first, "access_log")?;
        rest
    };
    for (k, v) in pairs(rest, &["path", "format"])? {
        if k == "path" {
            let path = Path::new(v);
            if !path.is_absolute() {
                return Err(format!("path must be an absolute path, not {v:?}"));
            }
            config.access_log_path = Some(path.to_path_buf());
            continue;
        }
        config.access_log_format = AccessFormat::parse(v).ok_or_else(|| {
            let names: Vec<&str> = AccessFormat::ALL.iter().map(|(n, _)| *n).collect();
            format!("format must be one of {}, not {v:?}", names.join(", "))
        })?;
    }
    Ok(())
}

/// The keys [`apply_line`] reads itself; the filtering keys are [`filter::KEYS`]. Typos are
/// matched against both.
const KEYS: [&str; 16] = [
    "listen",
    "admin",
    "workers",
    "queue",
    "timeouts",
    "limits",
    "retries",
    "health",
    "breaker",
    "slow_start",
    "access_log",
    "drain_timeout",
    "request_buffering",
    "buffers",
    "backend",
    "upgrade",
];

/// Names the `limits` key takes: the front end's and the filter's.
const LIMITS: [&str; 8] = [
    "max_request_line",
    "max_head",
    "max_headers",
    "max_connections",
    "tunnels",
    "max_target",
    "max_body",
    "max_clients",
];

/// Of [`LIMITS`], the front end's.
const FRONT_LIMITS: [&str; 5] = [
    "max_request_line",
    "max_head",
    "max_headers",
    "max_connections",
    "tunnels",
];

/// The names the `buffers` line takes.
const BUFFERS: [&str; 5] = [
    "memory",
    "memory_total",
    "temp_dir",
    "temp_file",
    "temp_total",
];

/// The `upgrade` line: `off`, or `allow=` a comma-separated list of protocol names (`Upgrade`
/// tokens such as `websocket`), kept in lowercase.
fn parse_upgrade(words: &[&str]) -> Result<Vec<String>, String> {
    if words == ["off"] {
        return Ok(Vec::new());
    }
    let mut allowed = Vec::new();
    for (_, v) in pairs(words, &["allow"])? {
        for token in v.split(',') {
            let valid = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                return Err(format!(
                    "upgrade allow= takes protocol names like websocket, separated by commas, \
                     not {token:?}"
                ));
            }
            allowed.push(token.to_ascii_lowercase());
        }
    }
    if allowed.is_empty() {
        return Err("upgrade takes allow=PROTOCOL[,PROTOCOL...] or off".into());
    }
    Ok(allowed)
}

/// Keys that may appear on more than one line.
const REPEATABLE: &[&str] = &["backend"];

impl Config {
    /// Parses config text. `origin` names the file in errors. Settings not in the text keep their
    /// defaults, except backends: a file that lists any replaces the default three.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_noting_defaults(text, origin).map(|(config, _)| config)
    }

    /// [`Config::parse`], also telling whether the text listed no backend, so the default
    /// three were filled in.
    fn parse_noting_defaults(text: &str, origin: &str) -> Result<(Config, bool), ConfigError> {
        let mut config = Config::default();
        config.backends.clear();
        let mut seen: Vec<&str> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| ConfigError {
                origin: origin.to_string(),
                line: i + 1,
                message,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or_default();
            let words: Vec<&str> = words.collect();
            if !REPEATABLE.contains(&key) && !filter::REPEATABLE.contains(&key) {
                if seen.contains(&key) {
                    return Err(err(format!("setting {key:?} is given twice")));
                }
                seen.push(key);
            }
            apply_line(&mut config, key, &words).map_err(|m| err(format!("{key}: {m}")))?;
            if key == "shared" {
                // Some problems show only when connecting (a wrong password): they name the line.
                if let Some(shared) = config.filter.shared.as_mut() {
                    shared.at = Some(format!("{origin}:{}", i + 1));
                }
            }
        }
        let defaulted = config.backends.is_empty();
        if defaulted {
            config.backends = Config::default().backends;
        }
        config.validate().map_err(|message| ConfigError {
            origin: origin.to_string(),
            line: 0,
            message,
        })?;
        Ok((config, defaulted))
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::read_noting_defaults(path).map(|(config, _)| config)
    }

    pub(super) fn read_noting_defaults(path: &Path) -> Result<(Config, bool), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        let (mut config, defaulted) = Config::parse_noting_defaults(&text, &origin)?;
        config.source = Some(path.to_path_buf());
        Ok((config, defaulted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of [`KEYS`] is one [`apply_line`] reads, so a suggestion is never a key that
    /// does not exist.
    #[test]
    fn the_key_list_is_the_keys_read() {
        for key in KEYS.iter().chain(filter::KEYS) {
            let result = apply_line(&mut Config::default(), key, &[]);
            if let Err(e) = result {
                assert!(!e.contains("unknown setting"), "{key}: {e}");
            }
        }
        assert!(apply_line(&mut Config::default(), "nokey", &[])
            .unwrap_err()
            .contains("unknown setting"));
    }
}
