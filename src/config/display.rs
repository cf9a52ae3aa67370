//! A configuration written back in the file's grammar: what `loadbalancer --check` prints.

use std::fmt;
use std::time::Duration;

use super::words::{format_duration, format_size};
use super::Config;

/// The admin token as `--check` prints it: the secret itself stays out of terminals and CI logs.
pub const HIDDEN_TOKEN: &str = "********";

/// The configuration in the config-file grammar, one key per line, every setting spelled out
/// (filtering keys only when set). Parsing the text gives back the same configuration, except
/// the admin token, written as [`HIDDEN_TOKEN`]. This is what `loadbalancer --check` prints.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| format_duration(d);
        let on_off = |b: bool| if b { "on" } else { "off" };
        writeln!(f, "listen        {}", self.listen)?;
        match (&self.admin, &self.admin_token) {
            (None, _) => writeln!(f, "admin         off")?,
            (Some(a), None) => writeln!(f, "admin         {a}")?,
            (Some(a), Some(_)) => writeln!(f, "admin         {a} token={HIDDEN_TOKEN}")?,
        }
        writeln!(f, "workers       {}", self.workers)?;
        match self.queue {
            Some(n) => writeln!(f, "queue         {n}")?,
            None => writeln!(f, "queue         off")?,
        }
        writeln!(
            f,
            "timeouts      connect={} response={}{} client={} head={} body={} queue={} tunnel={}",
            d(self.timeouts.connect),
            d(self.timeouts.response),
            // Unset, it follows the response timeout (a reload that changes one changes both).
            self.timeouts
                .send
                .map_or(String::new(), |s| format!(" send={}", d(s))),
            d(self.timeouts.client),
            d(self.timeouts.head),
            d(self.timeouts.body),
            d(self.timeouts.queue),
            d(self.timeouts.tunnel)
        )?;
        let mut limits = vec![
            format!(
                "max_request_line={}",
                format_size(self.limits.max_request_line as u64)
            ),
            format!("max_head={}", format_size(self.limits.max_head as u64)),
            format!("max_headers={}", self.limits.max_headers),
        ];
        if let Some(n) = self.limits.max_connections {
            limits.push(format!("max_connections={n}"));
        }
        limits.push(format!("tunnels={}", self.limits.tunnels));
        limits.extend(self.filter.limits_words());
        writeln!(f, "limits        {}", limits.join(" "))?;
        writeln!(
            f,
            "retries       {} budget={}% retry_timeouts={}",
            self.retries.count,
            self.retries.budget_percent,
            on_off(self.retries.on_timeout)
        )?;
        let h = &self.health;
        if h.enabled {
            writeln!(
                f,
                "health        path={} interval={} timeout={} rise={} fall={}",
                h.path,
                d(h.interval),
                d(h.timeout),
                h.rise,
                h.fall
            )?;
        } else {
            writeln!(f, "health        off")?;
        }
        let b = &self.breaker;
        write!(
            f,
            "breaker       failures={} cooldown={} max_cooldown={}",
            b.failures,
            d(b.cooldown),
            d(b.max_cooldown)
        )?;
        let statuses: Vec<String> = b.failure_statuses.iter().map(u16::to_string).collect();
        if !statuses.is_empty() {
            write!(f, " statuses={}", statuses.join(","))?;
        }
        writeln!(f)?;
        if self.slow_start.is_zero() {
            writeln!(f, "slow_start    off")?;
        } else {
            writeln!(f, "slow_start    {}", d(self.slow_start))?;
        }
        writeln!(f, "request_buffering {}", on_off(self.request_buffering))?;
        if self.upgrade.is_empty() {
            writeln!(f, "upgrade       off")?;
        } else {
            writeln!(f, "upgrade       allow={}", self.upgrade.join(","))?;
        }
        let b = &self.buffers;
        writeln!(
            f,
            "buffers       memory={} memory_total={} temp_dir={} temp_file={} temp_total={}",
            format_size(b.memory as u64),
            format_size(b.memory_total),
            b.temp_dir.display(),
            format_size(b.temp_file),
            format_size(b.temp_total)
        )?;
        write!(f, "access_log    {}", on_off(self.access_log))?;
        if let Some(path) = &self.access_log_path {
            write!(f, " path={}", path.display())?;
        }
        writeln!(f, " format={}", self.access_log_format.name())?;
        writeln!(f, "explain       {}", on_off(self.explain))?;
        writeln!(f, "drain_timeout {}", d(self.drain_timeout))?;
        write!(f, "{}", self.filter)?;
        for b in &self.backends {
            writeln!(f, "backend       {} weight={}", b.url, b.weight)?;
        }
        Ok(())
    }
}
