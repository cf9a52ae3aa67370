//! The command line: flags, `--help`, `--version`, and how flags override the file.

use std::path::{Path, PathBuf};

use super::words::{check_addr, did_you_mean, pairs, parse_count, parse_duration, parse_on_off};
use super::{BackendConfig, Config, ConfigError, DEFAULT_CONFIG_FILE};

/// What the command line asked for, besides the config.
#[derive(Debug, Default)]
pub struct Cli {
    /// The merged configuration.
    pub config: Config,
    /// `--demo`: also start a demo backend for each configured backend on this machine, and
    /// turn `explain` on unless `--explain off` is given.
    pub demo: bool,
    /// `--help` was given: print [`USAGE`] and exit.
    pub help: bool,
    /// `--version` was given: print the version and exit.
    pub version: bool,
    /// `--check` was given: print the effective configuration and exit without binding anything.
    pub check: bool,
    /// The backends are the built-in defaults (`localhost:8081..8083`): neither a config file
    /// nor `--backend` named any. Worth a warning at start-up.
    pub default_backends: bool,
}

/// The `--help` text: every option with its default.
pub const USAGE: &str = "\
loadbalancer: a synchronous HTTP/1.1 load balancer

USAGE:
    loadbalancer [OPTIONS]
    loadbalancer --check [--config FILE] [OPTIONS]

OPTIONS:
    --config FILE            config file (default: ./loadbalancer.conf if it exists)
    --listen ADDR            client-facing address (default 0.0.0.0:8080)
    --backend URL[,weight=N] a backend, repeatable; replaces the file's backends
                             (default http://localhost:8081..8083, weight 1);
                             also --backend URL weight=N, as in the config file
    --workers N              worker threads (default 64)
    --queue N|off            most requests waiting for a worker before 503 at once
                             (default off: one per connection; each waits up to
                             `timeouts queue=`, default 5s)
    --connect-timeout DUR    backend connect timeout (default 2s)
    --response-timeout DUR   longest wait for a backend's answer; a timed-out request is
                             not retried (default 30s; config: retries retry_timeouts=on)
    --access-log on|off      one log line per request (default on)
    --explain on|off         answer X-Balancer-Explain: 1 with why the request went where
                             it went; the dashboard shows the last decisions
                             (default off; on with --demo)
    --admin ADDR|off         dashboard, /status, /metrics, /health (default 127.0.0.1:9090)
    --admin-token SECRET     token the admin listener requires (default none; needed off
                             loopback)
    --demo                   also run a demo backend for each backend on this machine
                             (localhost, 127.0.0.1, ::1; any port), serverN for the Nth,
                             and turn --explain on
    --check                  print the effective configuration and exit: 0 when valid,
                             2 with file:line when not (binds nothing, like nginx -t);
                             with a shared line, also say whether Redis answers
    --version                print the version
    --help                   print this help

Durations take ms, s, m or h (e.g. 500ms, 2s). Logging follows RUST_LOG (default info).
Every setting, with the config file grammar, is documented in docs/CONFIGURATION.md.
";

/// The `--version` line: `loadbalancer X.Y.Z`.
pub fn version() -> String {
    format!("loadbalancer {}", env!("CARGO_PKG_VERSION"))
}

/// Parses command-line arguments (without the program name) into a [`Cli`]. The config file
/// (from `--config`, or `./loadbalancer.conf` when present) is read first, then flags override it.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, ConfigError> {
    parse_args_in(args, Path::new("."))
}

/// Flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "--config",
    "--listen",
    "--backend",
    "--workers",
    "--queue",
    "--connect-timeout",
    "--response-timeout",
    "--access-log",
    "--explain",
    "--admin",
    "--admin-token",
];

/// Flags that take no value.
const SWITCHES: &[&str] = &["--help", "--version", "--check", "--demo"];

/// Parses a `--backend` value: the URL, then `weight=N` separated by a comma or blanks
/// (`URL,weight=2`, `"URL weight=2"`).
fn parse_backend_flag(value: &str) -> Result<BackendConfig, String> {
    let mut parts = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty());
    let url = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let mut weight = 1;
    for (_, v) in pairs(&rest, &["weight"])? {
        weight = parse_count(v, "weight", 1, 1000)? as u32;
    }
    BackendConfig::parse(url, weight)
}

/// [`parse_args`] with the directory in which the default config file is looked for.
pub fn parse_args_in<I: IntoIterator<Item = String>>(
    args: I,
    dir: &Path,
) -> Result<Cli, ConfigError> {
    let Words {
        mut cli,
        file,
        flags,
    } = read_words(args)?;
    if cli.help || cli.version {
        // Answered without reading a config file, which may be broken.
        return Ok(cli);
    }
    let default_file = dir.join(DEFAULT_CONFIG_FILE);
    let (mut config, file_defaulted) = match file {
        Some(f) => Config::read_noting_defaults(&f)?,
        None if default_file.is_file() => Config::read_noting_defaults(&default_file)?,
        None => (Config::default(), true),
    };
    // A demonstration explains its decisions unless told not to; flags below may say otherwise.
    config.explain |= cli.demo;
    let mut flag_backends = Vec::new();
    for (name, value) in flags {
        apply_flag(&mut config, &name, value, &mut flag_backends)
            .map_err(|m| flag_err(&name, m))?;
    }
    cli.default_backends = file_defaulted && flag_backends.is_empty();
    if !flag_backends.is_empty() {
        config.backends = flag_backends;
    }
    config
        .validate()
        .map_err(|m| flag_err("configuration", m))?;
    cli.config = config;
    Ok(cli)
}

/// A problem with `flag`.
fn flag_err(flag: &str, message: String) -> ConfigError {
    ConfigError {
        origin: flag.to_string(),
        line: 0,
        message,
    }
}

/// The command line read, before any file: the switches (in a [`Cli`] still without its
/// config), the `--config` file, and the other flags with their values, in order.
struct Words {
    cli: Cli,
    file: Option<PathBuf>,
    flags: Vec<(String, String)>,
}

/// Reads the command line's words: `--flag value`, `--flag=value`, switches; `--backend URL
/// weight=N` as the config file writes it. An unknown flag gets the closest known one as a hint.
fn read_words<I: IntoIterator<Item = String>>(args: I) -> Result<Words, ConfigError> {
    let mut words = Words {
        cli: Cli::default(),
        file: None,
        flags: Vec::new(),
    };
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let cli = &mut words.cli;
        match name.as_str() {
            "--help" | "-h" => cli.help = true,
            "--version" | "-V" => cli.version = true,
            "--check" => cli.check = true,
            "--demo" => cli.demo = true,
            flag if VALUE_FLAGS.contains(&flag) => {
                let mut value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .ok_or_else(|| flag_err(&name, "needs a value".into()))?,
                };
                // `--backend URL weight=N`, as the config file writes it.
                if name == "--backend" {
                    while let Some(w) = args.next_if(|a| a.starts_with("weight=")) {
                        value = format!("{value},{w}");
                    }
                }
                if name == "--config" {
                    words.file = Some(PathBuf::from(value));
                } else {
                    words.flags.push((name, value));
                }
            }
            _ => {
                let known = VALUE_FLAGS.iter().chain(SWITCHES).copied();
                let hint = did_you_mean(&name, known)
                    .map(|f| format!(", did you mean {f}?"))
                    .unwrap_or_default();
                return Err(flag_err(&arg, format!("unknown option{hint} (see --help)")));
            }
        }
    }
    Ok(words)
}

/// Applies flag `name` (one of [`VALUE_FLAGS`] but `--config`) to `config`; a `--backend` goes
/// to `flag_backends` (which replace the file's).
fn apply_flag(
    config: &mut Config,
    name: &str,
    value: String,
    flag_backends: &mut Vec<BackendConfig>,
) -> Result<(), String> {
    match name {
        "--listen" => config.listen = check_addr(&value)?,
        "--backend" => {
            let b = parse_backend_flag(&value)?;
            if flag_backends.iter().any(|x| x.url == b.url) {
                return Err(format!("backend {} is given twice", b.url));
            }
            flag_backends.push(b);
        }
        "--workers" => config.workers = parse_count(&value, "workers", 1, 4096)? as usize,
        "--queue" => {
            config.queue = if value == "off" {
                None
            } else {
                Some(parse_count(&value, "queue", 1, 10_000_000)? as usize)
            }
        }
        "--connect-timeout" | "--response-timeout" => {
            let d = parse_duration(&value)?;
            if d.is_zero() {
                return Err("must be more than zero".into());
            }
            if name == "--connect-timeout" {
                config.timeouts.connect = d
            } else {
                config.timeouts.response = d
            }
        }
        "--access-log" => config.access_log = parse_on_off(&value, "access-log")?,
        "--explain" => config.explain = parse_on_off(&value, "explain")?,
        "--admin" => {
            config.admin = if value == "off" {
                None
            } else {
                Some(check_addr(&value)?)
            }
        }
        "--admin-token" if value.is_empty() => return Err("must not be empty".into()),
        "--admin-token" => config.admin_token = Some(value),
        _ => unreachable!("read_words passes on only VALUE_FLAGS"),
    }
    Ok(())
}
