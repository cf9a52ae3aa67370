//! Demo HTTP backends for the load balancer.
//!
//! Each demo server is a tiny HTTP/1.1 server (tiny_http) with these endpoints:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /health` | `200 ok`, or `503 unhealthy` once switched unhealthy through `/control` |
//! | `GET /control?delay=50ms&fail_rate=0.5&status=503&healthy=false` | changes any subset of the behaviour, answers it as JSON |
//! | any other request | `200 {"message":"Hello from server1","address":":8081"}`, after the injected delay, or the injected failure |
//!
//! The injected delay and failures ([`Behaviour`]) and the health switch exist so a learner can make one
//! backend slow or failing while the balancer runs and watch health checks, the circuit breaker and the
//! dynamic weights react, without restarting anything:
//!
//! ```text
//! curl 'localhost:8082/control?delay=300ms'            # server2 becomes slow
//! curl 'localhost:8083/control?fail_rate=0.5&status=500' # server3 fails half of its requests
//! curl 'localhost:8083/control?healthy=false'           # server3 fails its health checks
//! curl 'localhost:8083/control?delay=0&fail_rate=0&healthy=true' # back to normal
//! ```
//!
//! The binaries in `src/bin/` are one line each ([`main_for`]); the balancer's `--demo` mode calls
//! [`spawn`] directly. Both behave the same: they listen on loopback, log the same lines (start,
//! every `/control` change, stop) through the `log` crate, in the balancer's format when run on
//! their own ([`init_logging`]), and stop on SIGINT or SIGTERM.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tiny_http::{Header, Request, Response, Server};

/// Threads answering requests, per demo server.
///
/// Deliberately small and fixed: while every thread sits out an injected delay, further requests
/// (health checks included) wait in line, as they would on a real overloaded server.
const WORKER_THREADS: usize = 8;

/// How often a demo server connects to itself to free a connection stuck in tiny_http's pool.
const KICK_INTERVAL: Duration = Duration::from_millis(100);

/// How a demo server misbehaves on purpose. The default is a well-behaved server.
///
/// Applies to every request except `/health` and `/control`: first wait [`delay`](Self::delay), then
/// with probability [`fail_rate`](Self::fail_rate) answer [`fail_status`](Self::fail_status) with a short
/// plain-text body instead of the JSON greeting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Wait before answering. Default: zero.
    pub delay: Duration,
    /// Fraction of requests answered with `fail_status`, from 0.0 (never) to 1.0 (always). Default: 0.0.
    pub fail_rate: f64,
    /// Status of an injected failure, an error status from 400 to 599. Default: 503.
    pub fail_status: u16,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            delay: Duration::ZERO,
            fail_rate: 0.0,
            fail_status: 503,
        }
    }
}

impl Behaviour {
    /// The same checks `/control` and the command line apply, for behaviours built in code.
    fn validate(&self) -> Result<(), String> {
        check_fail_rate(self.fail_rate).map_err(|e| format!("fail_rate: {e}"))?;
        check_fail_status(self.fail_status).map_err(|e| format!("fail_status: {e}"))?;
        Ok(())
    }
}

/// Everything `/control` can change, kept under one lock so a request sees a consistent set.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    behaviour: Behaviour,
    healthy: bool,
}

impl State {
    fn to_json(self) -> String {
        format!(
            r#"{{"delay_ms":{},"fail_rate":{},"fail_status":{},"healthy":{}}}"#,
            self.behaviour.delay.as_millis(),
            self.behaviour.fail_rate,
            self.behaviour.fail_status,
            self.healthy
        )
    }
}

/// What the worker threads share with each other and with [`DemoServer`].
struct Shared {
    name: String,
    /// The greeting never changes, so it is rendered once.
    hello: String,
    state: Mutex<State>,
    /// Set by [`DemoServer::stop`]; the condvar wakes workers sitting out an injected delay, so stopping
    /// never waits for a long delay to end.
    stopped: Mutex<bool>,
    stop_signal: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and the state is valid whatever happened: never give up on it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps for `delay`, or less if the server is being stopped.
    fn pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .stop_signal
            .wait_timeout_while(stopped, delay, |stopped| !*stopped);
    }
}

/// A running demo server. Stops (and joins its threads) on [`stop`](Self::stop) or when dropped.
pub struct DemoServer {
    shared: Arc<Shared>,
    server: Arc<Server>,
    addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    kicker: Option<JoinHandle<()>>,
}

impl fmt::Debug for DemoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoServer")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a demo server called `name` listening on `addr` (e.g. `"127.0.0.1:0"` for any free port) and
/// returns as soon as it is bound; requests are answered on a small pool of threads.
///
/// Errors: the address does not resolve or cannot be bound (the message names `name` and `addr`; the
/// kind is kept, e.g. [`io::ErrorKind::AddrInUse`]), or `behaviour` is out of range
/// ([`io::ErrorKind::InvalidInput`]).
pub fn spawn(name: &str, addr: &str, behaviour: Behaviour) -> io::Result<DemoServer> {
    behaviour
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
    let server = Server::http(addr).map_err(|e| {
        let kind = e
            .downcast_ref::<io::Error>()
            .map_or(io::ErrorKind::Other, io::Error::kind);
        let hint = if kind == io::ErrorKind::AddrInUse {
            " (is another server already using that port?)"
        } else {
            ""
        };
        io::Error::new(kind, format!("{name}: cannot listen on {addr}: {e}{hint}"))
    })?;
    let local = server.server_addr().to_ip().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: {addr} is not a TCP address"),
        )
    })?;

    let mut demo = DemoServer {
        shared: Arc::new(Shared {
            name: name.to_owned(),
            hello: format!(
                r#"{{"message":"Hello from {}","address":":{}"}}"#,
                json_escape(name),
                local.port()
            ),
            state: Mutex::new(State {
                behaviour,
                healthy: true,
            }),
            stopped: Mutex::new(false),
            stop_signal: Condvar::new(),
        }),
        server: Arc::new(server),
        addr: local,
        workers: Vec::with_capacity(WORKER_THREADS),
        kicker: None,
    };
    for i in 0..WORKER_THREADS {
        let (server, shared) = (Arc::clone(&demo.server), Arc::clone(&demo.shared));
        // Names are built from the port, not `name`, which may hold anything (even a NUL byte).
        let worker = std::thread::Builder::new()
            .name(format!("demo-{}-{i}", local.port()))
            .spawn(move || serve(&server, &shared))?;
        // If a later spawn fails, `?` drops `demo`, which stops the workers started so far.
        demo.workers.push(worker);
    }
    let shared = Arc::clone(&demo.shared);
    demo.kicker = Some(
        std::thread::Builder::new()
            .name(format!("demo-{}-kick", local.port()))
            .spawn(move || kick(local, &shared))?,
    );
    log::info!("{name}: listening on {local}");
    Ok(demo)
}

impl DemoServer {
    /// The address actually bound (with the real port when spawned on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name given to [`spawn`], as used in the greeting.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current behaviour, including changes made through `/control`.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.state().behaviour
    }

    /// Replaces the behaviour, like `/control` does. Errors (changing nothing) when it is out of range.
    pub fn set_behaviour(&self, behaviour: Behaviour) -> Result<(), String> {
        behaviour.validate()?;
        self.shared.state().behaviour = behaviour;
        Ok(())
    }

    /// Makes `/health` answer 200 (`true`, the default) or 503 (`false`), like `/control?healthy=`.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.state().healthy = healthy;
    }

    /// Stops the server: requests already received are answered (injected delays are cut short),
    /// then the worker threads are joined. Dropping the server does the same.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        *self
            .shared
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.stop_signal.notify_all();
        // Each unblock releases exactly one thread waiting in `recv`.
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..).chain(self.kicker.take()) {
            // A worker that panicked has nothing left to clean up.
            let _ = worker.join();
        }
        log::info!("{}: stopped", self.shared.name);
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Connects to the server and hangs up at once, every [`KICK_INTERVAL`] until it stops.
///
/// tiny_http gives each connection a thread from a pool, and when several connections arrive
/// together the pool can queue one behind a thread it counts as idle but has already woken for
/// another. A keep-alive connection holds its thread until the client closes it, so the queued
/// one can wait indefinitely (the balancer works around the same race with its watchdog, which
/// looks for such connections first; a demo server just kicks blindly). Each connection we open
/// finds no idle thread, so tiny_http starts one; after our connection ends, that thread takes
/// the oldest queued connection. Cost: ten empty connections a second.
fn kick(addr: SocketAddr, shared: &Shared) {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    while !shared.is_stopped() {
        shared.pause(KICK_INTERVAL);
        if !shared.is_stopped() {
            let _ = TcpStream::connect_timeout(&target, Duration::from_millis(200));
        }
    }
}

fn serve(server: &Server, shared: &Shared) {
    let mut rng = Rng::seeded();
    loop {
        match server.recv() {
            Ok(request) => handle(request, shared, &mut rng),
            // `recv` fails both when unblocked by `stop` and on accept errors; only the first ends us.
            Err(_) if shared.is_stopped() => return,
            Err(e) => log::warn!("{}: receiving a request failed: {e}", shared.name),
        }
    }
}

fn handle(request: Request, shared: &Shared, rng: &mut Rng) {
    let started = Instant::now();
    let reply = route(request.url(), shared, rng);
    log::debug!(
        "{}: {} {} -> {} in {:?}",
        shared.name,
        request.method(),
        request.url(),
        reply.status,
        started.elapsed()
    );
    let content_type = Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes())
        .expect("content types are valid header values");
    let response = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(content_type);
    if let Err(e) = request.respond(response) {
        log::debug!("{}: client went away before the answer: {e}", shared.name);
    }
}

/// The largest answer `/bytes/N` gives. 64 MiB.
const MAX_BYTES: usize = 64 << 20;

/// An answer, kept apart from tiny_http so routing is plain code.
#[derive(Debug, PartialEq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }
}

fn route(url: &str, shared: &Shared, rng: &mut Rng) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match path {
        "/health" => {
            if shared.state().healthy {
                Reply::text(200, "ok")
            } else {
                Reply::text(503, "unhealthy")
            }
        }
        "/control" => {
            let mut state = shared.state();
            match apply_control(*state, query) {
                Ok(changed) => {
                    if changed != *state {
                        log::info!("{}: /control: now {}", shared.name, changed.to_json());
                    }
                    *state = changed;
                    Reply::json(200, changed.to_json())
                }
                Err(reason) => {
                    log::warn!(
                        "{}: /control refused, nothing changed: {reason}",
                        shared.name
                    );
                    Reply::text(400, reason)
                }
            }
        }
        _ if path.starts_with("/bytes/") => match path["/bytes/".len()..].parse::<usize>() {
            // A large answer, for watching slow readers (README: slow clients).
            Ok(n) if n <= MAX_BYTES => Reply::text(200, "x".repeat(n)),
            _ => Reply::text(
                400,
                format!("/bytes/N takes a number of bytes up to {MAX_BYTES}"),
            ),
        },
        _ => {
            // Copy, so the lock is not held through the delay.
            let behaviour = shared.state().behaviour;
            shared.pause(behaviour.delay);
            if behaviour.fail_rate > 0.0 && rng.next_f64() < behaviour.fail_rate {
                Reply::text(
                    behaviour.fail_status,
                    format!(
                        "{}: injected failure (fail_rate {})",
                        shared.name, behaviour.fail_rate
                    ),
                )
            } else {
                Reply::json(200, shared.hello.clone())
            }
        }
    }
}

/// Applies a `/control` query to `state`. All or nothing: on the first bad parameter the error names
/// it and the caller keeps the old state. An empty query changes nothing (a way to read the state).
fn apply_control(mut state: State, query: &str) -> Result<State, String> {
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |reason: String| format!("bad {key} {value:?}: {reason}");
        match key {
            "delay" => state.behaviour.delay = parse_duration(value).map_err(bad)?,
            "fail_rate" => state.behaviour.fail_rate = parse_fail_rate(value).map_err(bad)?,
            "status" => state.behaviour.fail_status = parse_fail_status(value).map_err(bad)?,
            "healthy" => {
                state.healthy = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("expected true or false".into())),
                }
            }
            _ => {
                return Err(format!(
                    "unknown control parameter {key:?}; known: delay, fail_rate, status, healthy"
                ))
            }
        }
    }
    Ok(state)
}

/// Parses `0` or a whole number with a unit: `ms`, `s`, `m` or `h` (`50ms`, `2s`, `1m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration like 50ms, 2s, 1m or 0";
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| EXPECTED.to_string())?;
    let seconds_per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(EXPECTED.to_string()),
    };
    number
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| "duration too long".to_string())
}

fn parse_fail_rate(text: &str) -> Result<f64, String> {
    let rate = text
        .parse()
        .map_err(|_| "expected a number from 0.0 to 1.0".to_string())?;
    check_fail_rate(rate)?;
    Ok(rate)
}

fn check_fail_rate(rate: f64) -> Result<(), String> {
    // `contains` is false for NaN, so NaN is refused too.
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("{rate} is not a number from 0.0 to 1.0"))
    }
}

fn parse_fail_status(text: &str) -> Result<u16, String> {
    let status = text
        .parse()
        .map_err(|_| "expected an error status from 400 to 599".to_string())?;
    check_fail_status(status)?;
    Ok(status)
}

fn check_fail_status(status: u16) -> Result<(), String> {
    // Only error statuses: a 1xx would break HTTP framing, and a 2xx/3xx is not a failure.
    if (400..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!("{status} is not an error status from 400 to 599"))
    }
}

fn json_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if u32::from(c) < 0x20 => escaped.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped
}

/// xorshift64* — plenty for deciding which requests fail, and keeps the `rand` crate out.
struct Rng(u64);

impl Rng {
    /// Seeded from the clock plus a process-wide counter, so threads started in the same nanosecond
    /// still get different streams.
    fn seeded() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // splitmix64 finaliser: seeds that differ in a few bits give unrelated streams.
        let mut z = nanos.wrapping_add(count.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Zero is xorshift's fixed point: it would only ever produce zero.
        Rng(z | 1)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        // The top 53 bits fill an f64 mantissa exactly.
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
enum Command {
    Run {
        bind: IpAddr,
        port: u16,
        behaviour: Behaviour,
    },
    Help,
}

fn usage(name: &str, default_port: u16) -> String {
    format!(
        "Usage: {name} [--port N] [--bind ADDR] [--delay DUR] [--fail-rate F] [--status N]

A demo backend for the load balancer.
  GET /         answers {{\"message\":\"Hello from {name}\",\"address\":\":PORT\"}}
  GET /health   answers 200 ok (503 once switched unhealthy)
  GET /control?delay=50ms&fail_rate=0.5&status=503&healthy=false
                changes any of these while running and answers the result as JSON

Options:
  --port N        port to listen on [default: {default_port}]
  --bind ADDR     address to listen on, e.g. 0.0.0.0 for every interface [default: 127.0.0.1]
  --delay DUR     wait before answering: 0, 50ms, 2s, 1m [default: 0]
  --fail-rate F   fraction of requests answered with --status, 0.0 to 1.0 [default: 0]
  --status N      status of those failures, 400 to 599 [default: 503]
  --help          print this help

Logs go to stderr (RUST_LOG, default info). SIGINT or SIGTERM stops the server."
    )
}

/// Parses the flags after the program name. Accepts `--flag value` and `--flag=value`.
fn parse_args(default_port: u16, args: &[String]) -> Result<Command, String> {
    let mut port = default_port;
    let mut bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut behaviour = Behaviour::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        if !matches!(
            flag,
            "--port" | "--bind" | "--delay" | "--fail-rate" | "--status"
        ) {
            return Err(format!("unknown argument {arg:?}"));
        }
        let value = inline_value
            .or_else(|| args.next().cloned())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |reason: String| format!("bad {flag} {value:?}: {reason}");
        match flag {
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| bad("expected a port number from 0 to 65535".into()))?
            }
            "--bind" => {
                bind = value
                    .parse()
                    .map_err(|_| bad("expected an IP address like 127.0.0.1 or 0.0.0.0".into()))?
            }
            "--delay" => behaviour.delay = parse_duration(&value).map_err(bad)?,
            "--fail-rate" => behaviour.fail_rate = parse_fail_rate(&value).map_err(bad)?,
            _ => behaviour.fail_status = parse_fail_status(&value).map_err(bad)?,
        }
    }
    Ok(Command::Run {
        bind,
        port,
        behaviour,
    })
}

/// Starts logging to stderr in the balancer's format, so a standalone server's lines read like
/// the ones `--demo` prints: `2026-11-25T17:13:08.123Z INFO  servers: server1: ...` (time in
/// UTC, level, target, message). `RUST_LOG` chooses what is shown (default `info`).
pub fn init_logging() {
    use std::io::Write;
    let line = |buf: &mut env_logger::fmt::Formatter, record: &log::Record| {
        let (time, level) = (buf.timestamp_millis(), record.level());
        writeln!(
            buf,
            "{time} {level:<5} {}: {}",
            record.target(),
            record.args()
        )
    };
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .filter_module("tiny_http", log::LevelFilter::Off)
        .format(line)
        .try_init();
}

/// The whole `main` of a demo server binary: parses the command line (`--port N`, default
/// `default_port`; `--bind ADDR`, default `127.0.0.1`; `--delay DUR`; `--fail-rate F`;
/// `--status N`; `--help`), logs like the balancer ([`init_logging`]) and serves until SIGINT or
/// SIGTERM, then stops and exits 0.
///
/// The signals are handled explicitly, not left to their default action: a shell script that
/// starts a server in the background (`server1 &`) starts it with SIGINT ignored, and the
/// server must still stop when asked. Exits with code 2 on a bad flag and 1 when the port cannot
/// be bound, after a message on stderr.
pub fn main_for(name: &str, default_port: u16) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bind, port, behaviour) = match parse_args(default_port, &args) {
        Ok(Command::Run {
            bind,
            port,
            behaviour,
        }) => (bind, port, behaviour),
        Ok(Command::Help) => {
            println!("{}", usage(name, default_port));
            return;
        }
        Err(e) => {
            eprintln!("{name}: {e}\nTry '{name} --help' for the flags.");
            std::process::exit(2);
        }
    };
    init_logging();
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("{name}: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    let server = match spawn(name, &SocketAddr::new(bind, port).to_string(), behaviour) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            std::process::exit(1);
        }
    };
    if behaviour != Behaviour::default() {
        let state = State {
            behaviour,
            healthy: true,
        };
        log::info!("{name}: misbehaving from the start: {}", state.to_json());
    }
    if let Some(signal) = signals.forever().next() {
        let what = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        log::info!("{name}: {what} received, stopping");
    }
    server.stop();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    struct Answer {
        status: u16,
        head: String,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim())
            })
        }
    }

    fn get(addr: SocketAddr, target: &str) -> Answer {
        let mut stream = TcpStream::connect(addr).expect("connect");
        // A safety net so a broken server fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        Answer {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    fn start(name: &str) -> DemoServer {
        spawn(name, "127.0.0.1:0", Behaviour::default()).expect("spawn")
    }

    #[test]
    fn greets_with_name_and_port_as_json() {
        let server = start("server1");
        assert_eq!(server.name(), "server1");
        let port = server.addr().port();
        for target in ["/", "/anything/else?x=1"] {
            let answer = get(server.addr(), target);
            assert_eq!(answer.status, 200);
            assert_eq!(answer.header("content-type"), Some("application/json"));
            assert_eq!(
                answer.body,
                format!(r#"{{"message":"Hello from server1","address":":{port}"}}"#)
            );
        }
        server.stop();
    }

    #[test]
    fn escapes_the_name_in_json() {
        let server = start("a\"b\\c");
        let answer = get(server.addr(), "/");
        assert!(
            answer.body.contains(r#""Hello from a\"b\\c""#),
            "{}",
            answer.body
        );
        assert_eq!(json_escape("tab\there\u{1}"), "tab\\there\\u0001");
    }

    #[test]
    fn bytes_answers_that_many_bytes() {
        let server = start("s");
        let answer = get(server.addr(), "/bytes/100000");
        // tiny_http sends an answer this large chunked: count the payload's bytes.
        let xs = answer.body.bytes().filter(|&b| b == b'x').count();
        assert_eq!((answer.status, xs), (200, 100_000));
        assert_eq!(get(server.addr(), "/bytes/x").status, 400);
        assert_eq!(get(server.addr(), "/bytes/999999999999").status, 400);
    }

    #[test]
    fn health_follows_the_healthy_switch() {
        let server = start("server1");
        let answer = get(server.addr(), "/health");
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));

        let answer = get(server.addr(), "/control?healthy=false");
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.body,
            r#"{"delay_ms":0,"fail_rate":0,"fail_status":503,"healthy":false}"#
        );
        assert_eq!(get(server.addr(), "/health").status, 503);
        // Unhealthy only affects /health: the greeting still works.
        assert_eq!(get(server.addr(), "/").status, 200);

        get(server.addr(), "/control?healthy=true");
        assert_eq!(get(server.addr(), "/health").status, 200);

        server.set_healthy(false);
        assert_eq!(get(server.addr(), "/health").status, 503);
    }

    #[test]
    fn control_sets_and_clears_the_delay() {
        let server = start("server1");
        let answer = get(server.addr(), "/control?delay=50ms");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(
            answer.body,
            r#"{"delay_ms":50,"fail_rate":0,"fail_status":503,"healthy":true}"#
        );
        assert_eq!(server.behaviour().delay, Duration::from_millis(50));

        let started = Instant::now();
        assert_eq!(get(server.addr(), "/").status, 200);
        assert!(started.elapsed() >= Duration::from_millis(50));

        // Timing can only be checked from below without flakiness, so the clearing is read back instead.
        let answer = get(server.addr(), "/control?delay=0");
        assert!(answer.body.contains(r#""delay_ms":0"#), "{}", answer.body);
        assert_eq!(server.behaviour().delay, Duration::ZERO);
    }

    #[test]
    fn control_sets_failures() {
        let server = start("server2");
        let answer = get(server.addr(), "/control?fail_rate=1&status=500");
        assert_eq!(
            answer.body,
            r#"{"delay_ms":0,"fail_rate":1,"fail_status":500,"healthy":true}"#
        );
        let answer = get(server.addr(), "/");
        assert_eq!(answer.status, 500);
        assert!(answer
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"));
        assert!(answer.body.contains("server2"), "{}", answer.body);
        // Health checks are not subject to injected failures.
        assert_eq!(get(server.addr(), "/health").status, 200);

        get(server.addr(), "/control?fail_rate=0.0");
        assert_eq!(get(server.addr(), "/").status, 200);
    }

    #[test]
    fn control_refuses_bad_values_and_changes_nothing() {
        let server = start("server1");
        for (query, named) in [
            ("delay=abc", "delay"),
            ("delay=5", "delay"),
            ("fail_rate=2", "fail_rate"),
            ("fail_rate=NaN", "fail_rate"),
            ("status=200", "status"),
            ("status=x", "status"),
            ("healthy=maybe", "healthy"),
            ("colour=blue", "colour"),
            // All or nothing: the good delay before the bad rate is not applied either.
            ("delay=50ms&fail_rate=-1", "fail_rate"),
        ] {
            let answer = get(server.addr(), &format!("/control?{query}"));
            assert_eq!(answer.status, 400, "{query}");
            assert!(answer.body.contains(named), "{query}: {}", answer.body);
        }
        assert_eq!(server.behaviour(), Behaviour::default());
        assert_eq!(
            get(server.addr(), "/control").body,
            r#"{"delay_ms":0,"fail_rate":0,"fail_status":503,"healthy":true}"#
        );
    }

    #[test]
    fn stop_cuts_injected_delays_short() {
        let server = start("server1");
        server
            .set_behaviour(Behaviour {
                delay: Duration::from_secs(120),
                ..Behaviour::default()
            })
            .unwrap();
        // A request that will be sitting out the delay (or still queued) when stop is called.
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        write!(stream, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn bind_errors_name_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = spawn("server1", &addr, Behaviour::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr), "{err}");
        assert!(err.to_string().contains("server1"), "{err}");
    }

    #[test]
    fn out_of_range_behaviour_is_refused() {
        let bad = Behaviour {
            fail_rate: 1.5,
            ..Behaviour::default()
        };
        let err = spawn("server1", "127.0.0.1:0", bad).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("fail_rate"), "{err}");

        let server = start("server1");
        assert!(server
            .set_behaviour(Behaviour {
                fail_status: 200,
                ..Behaviour::default()
            })
            .is_err());
        assert_eq!(server.behaviour(), Behaviour::default());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "5",
            "ms",
            "1.5s",
            "-1s",
            "2 s",
            "3d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rng_is_roughly_uniform() {
        let mut rng = Rng::seeded();
        let samples: Vec<f64> = (0..10_000).map(|_| rng.next_f64()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        let below_half = samples.iter().filter(|&&x| x < 0.5).count();
        assert!((4_000..6_000).contains(&below_half), "{below_half}");
    }

    #[test]
    fn command_line() {
        let args = |list: &[&str]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
        assert_eq!(
            parse_args(8081, &[]),
            Ok(Command::Run {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 8081,
                behaviour: Behaviour::default()
            })
        );
        assert_eq!(
            parse_args(
                8081,
                &args(&[
                    "--bind",
                    "0.0.0.0",
                    "--port",
                    "9000",
                    "--delay=50ms",
                    "--fail-rate",
                    "0.25",
                    "--status",
                    "502"
                ])
            ),
            Ok(Command::Run {
                bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 9000,
                behaviour: Behaviour {
                    delay: Duration::from_millis(50),
                    fail_rate: 0.25,
                    fail_status: 502
                }
            })
        );
        assert_eq!(parse_args(8081, &args(&["--help"])), Ok(Command::Help));
        for (bad, named) in [
            (&["--port", "70000"][..], "--port"),
            (&["--port"][..], "--port"),
            (&["--delay", "fast"][..], "--delay"),
            (&["--fail-rate=2"][..], "--fail-rate"),
            (&["--status", "200"][..], "--status"),
            (&["--colour", "blue"][..], "--colour"),
            (&["--bind", "everywhere"][..], "--bind"),
            (&["extra"][..], "extra"),
        ] {
            let err = parse_args(8081, &args(bad)).unwrap_err();
            assert!(err.contains(named), "{bad:?}: {err}");
        }
    }
}
