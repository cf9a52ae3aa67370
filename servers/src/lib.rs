//! Demo HTTP backends for the load balancer.
//!
//! Each demo server is a small HTTP/1.1 server (`http.rs`: framing of its own, parsing by
//! httparse) with these endpoints:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /health` | `200 ok`, or `503 unhealthy` once switched unhealthy through `/control` |
//! | `GET /control?delay=50ms&fail_rate=0.5&status=503&healthy=false&drop=true&refuse=10s` | changes any subset of the behaviour, answers it as JSON |
//! | `GET /bytes/N` | `200` and N bytes of `x`, for large answers |
//! | `GET /ws` (a WebSocket handshake) | `101`, then every message echoed prefixed with the server's name (`websocket.rs`); without the handshake, `400` |
//! | any other request | `200 {"message":"Hello from server1","address":":8081"}`, after the injected delay, or the injected failure |
//!
//! The switches exist so a learner can make one backend misbehave while the balancer runs and
//! watch health checks, the circuit breaker, retries and the dynamic weights react, without
//! restarting anything:
//!
//! ```text
//! curl 'localhost:8082/control?delay=300ms'            # server2 becomes slow
//! curl 'localhost:8083/control?fail_rate=0.5&status=500' # server3 fails half of its requests
//! curl 'localhost:8083/control?healthy=false'           # server3 fails its health checks
//! curl 'localhost:8083/control?drop=true'               # server3 cuts every answer mid-body
//! curl 'localhost:8083/control?delay=0&fail_rate=0&healthy=true&drop=false' # back to normal
//! curl 'localhost:8083/control?refuse=30s'              # server3 is dead for 30 s
//! ```
//!
//! `refuse` makes the server look dead, as a crashed process does: once the answer to the
//! `/control` request is sent, nothing listens on the port (connections are refused) and every
//! open connection is closed, the balancer's pooled ones included. It takes a duration because
//! nothing could switch it back: no `/control` request reaches a server that does not listen.
//! When the time is up the server listens on the same port again, like a restarted process.
//! Code in the same process (a test, say) can refuse until told otherwise with
//! [`DemoServer::set_refusing`].
//!
//! The binaries in `src/bin/` are one line each ([`main_for`]); the balancer's `--demo` mode calls
//! [`spawn`] directly. Both behave the same: they listen on loopback, log the same lines (start,
//! every `/control` change, stop) through the `log` crate, in the balancer's format when run on
//! their own ([`init_logging`]), and stop on SIGINT or SIGTERM.
//!
//! Threads: one accepts connections, one serves each connection (reading requests one after the
//! other, for keep-alive), and at most [`MAX_ANSWERING`] of them answer at once.
//!
//! The demo servers own their connections rather than serving through an HTTP server library:
//! `refuse` closes them all and `drop` closes one mid-answer, which tiny_http (the library the
//! project's design names for them) does not let a handler do; and its thread pool leaves part
//! of a burst of keep-alive connections unserved. `tests/tiny_http_limits.rs` shows all three.

mod http;
mod websocket;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Requests a demo server answers at once; more wait for their turn.
///
/// Deliberately small and fixed: while every turn is taken by a request sitting out an injected
/// delay, further requests (health checks included) wait in line, as they would on a real
/// overloaded server.
pub const MAX_ANSWERING: usize = 8;

/// Connections a demo server keeps open at once; one more is closed as soon as it is accepted.
/// Each costs a thread, mostly asleep in a read. 1024.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long [`DemoServer::stop`] lets requests already received finish before it closes their
/// connections. 2 s.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How a demo server misbehaves on purpose. The default is a well-behaved server.
///
/// `delay` and `fail_rate` apply to every request except `/health`, `/control` and `/bytes/N`:
/// first wait [`delay`](Self::delay), then with probability [`fail_rate`](Self::fail_rate) answer
/// [`fail_status`](Self::fail_status) with a short plain-text body instead of the JSON greeting.
/// [`drop`](Self::drop) applies to every request except `/health` and `/control`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Wait before answering. Default: zero.
    pub delay: Duration,
    /// Fraction of requests answered with `fail_status`, from 0.0 (never) to 1.0 (always). Default: 0.0.
    pub fail_rate: f64,
    /// Status of an injected failure, an error status from 400 to 599. Default: 503.
    pub fail_status: u16,
    /// Cut every answer mid-body: the head announces the whole `Content-Length`, half of the
    /// body is sent, then the connection is closed. Default: false.
    pub drop: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            delay: Duration::ZERO,
            fail_rate: 0.0,
            fail_status: 503,
            drop: false,
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

/// The longest `refuse` a `/control` request may ask for. 1 h.
const MAX_REFUSE: Duration = Duration::from_secs(3600);

/// What `/control` changes for every request after it, kept under one lock so a request sees a
/// consistent set. (`refuse` is not here: it changes whether the server listens at all.)
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    behaviour: Behaviour,
    healthy: bool,
}

impl State {
    fn new(behaviour: Behaviour) -> State {
        State {
            behaviour,
            healthy: true,
        }
    }

    /// The state as `/control` answers it, with `refuse`: how long the server is about to stop
    /// listening (zero: it goes on listening).
    fn to_json(self, refuse: Duration) -> String {
        format!(
            r#"{{"delay_ms":{},"fail_rate":{},"fail_status":{},"drop":{},"healthy":{},"refuse_ms":{}}}"#,
            self.behaviour.delay.as_millis(),
            self.behaviour.fail_rate,
            self.behaviour.fail_status,
            self.behaviour.drop,
            self.healthy,
            refuse.as_millis()
        )
    }
}

/// Whether a demo server listens on its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listening {
    /// It listens (the default).
    Yes,
    /// Nothing listens until then (`/control?refuse=10s`); then it listens again by itself.
    No { until: Instant },
    /// Nothing listens until [`DemoServer::set_refusing`]`(false)`.
    NoUntilTold,
}

/// What threads wait on (a turn to answer, the end of a refusal, the server stopping), under one
/// lock so that one condvar serves them all: a stop wakes every wait at once.
#[derive(Debug)]
struct Turns {
    stopped: bool,
    /// Requests being answered now, at most [`MAX_ANSWERING`].
    answering: usize,
    /// Whether the server is to listen: the acceptor follows it.
    listening: Listening,
    /// Whether the acceptor holds a bound listener now.
    bound: bool,
}

impl Turns {
    /// True while the server is to refuse connections, at `now`.
    fn refusing(&self, now: Instant) -> bool {
        match self.listening {
            Listening::Yes => false,
            Listening::No { until } => now < until,
            Listening::NoUntilTold => true,
        }
    }
}

/// The open connections: a handle to each, so that [`DemoServer::stop`] can end their reads,
/// and a refusal can close them.
#[derive(Debug, Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, TcpStream>,
}

impl Connections {
    /// Shuts down `how` of every open connection; their threads then end by themselves. Returns
    /// how many there were.
    fn shut_down(&self, how: Shutdown) -> usize {
        for stream in self.open.values() {
            let _ = stream.shutdown(how);
        }
        self.open.len()
    }
}

/// What the threads of one demo server share with each other and with [`DemoServer`].
struct Shared {
    name: String,
    /// The address bound, where the server listens again after a refusal.
    addr: SocketAddr,
    /// The greeting never changes, so it is rendered once.
    hello: String,
    state: Mutex<State>,
    turns: Mutex<Turns>,
    /// Signalled when the server stops, when a turn to answer is given back, and when the
    /// server is to listen or refuse, or has started to.
    turns_changed: Condvar,
    connections: Mutex<Connections>,
    /// Signalled when a connection closes.
    connection_closed: Condvar,
}

/// Locks `mutex`, whatever happened to a thread that held it: nothing here panics while holding
/// one of these locks, and their contents are valid at every step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn is_stopped(&self) -> bool {
        lock(&self.turns).stopped
    }

    /// Sleeps for `delay`, or less if the server is being stopped.
    fn pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        let turns = lock(&self.turns);
        let _ = self
            .turns_changed
            .wait_timeout_while(turns, delay, |t| !t.stopped);
    }

    /// Waits for a turn to answer; the turn is given back when the returned guard drops. A
    /// stopping server answers what it has received without waiting.
    fn turn(&self) -> Turn<'_> {
        let mut turns = lock(&self.turns);
        while turns.answering >= MAX_ANSWERING && !turns.stopped {
            turns = self
                .turns_changed
                .wait(turns)
                .unwrap_or_else(PoisonError::into_inner);
        }
        turns.answering += 1;
        Turn(self)
    }

    /// Tells the acceptor to listen or to stop listening, and wakes it: from its wait for the
    /// end of a refusal through the condvar, from `accept` with a connection of our own (which
    /// it closes unanswered, as every connection while refusing).
    fn set_listening(&self, listening: Listening) {
        lock(&self.turns).listening = listening;
        self.turns_changed.notify_all();
        if listening != Listening::Yes {
            let _ = TcpStream::connect_timeout(&reachable(self.addr), Duration::from_secs(1));
        }
    }

    /// Waits (up to 5 s) until the acceptor has followed the last [`set_listening`]: a listener
    /// is bound when `bound`, none when not. False when it has not (or the server stopped).
    ///
    /// [`set_listening`]: Self::set_listening
    fn wait_bound(&self, bound: bool) -> bool {
        let turns = lock(&self.turns);
        let (turns, _) = self
            .turns_changed
            .wait_timeout_while(turns, Duration::from_secs(5), |t| {
                t.bound != bound && !t.stopped
            })
            .unwrap_or_else(PoisonError::into_inner);
        turns.bound == bound
    }

    /// For the acceptor: waits while the server is to refuse connections. False when the
    /// server stops instead.
    fn wait_while_refusing(&self) -> bool {
        let mut turns = lock(&self.turns);
        loop {
            let now = Instant::now();
            if turns.stopped {
                return false;
            }
            if !turns.refusing(now) {
                turns.listening = Listening::Yes;
                return true;
            }
            turns = match turns.listening {
                Listening::No { until } => {
                    self.turns_changed
                        .wait_timeout(turns, until - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                _ => self
                    .turns_changed
                    .wait(turns)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// For the acceptor: records whether it holds a bound listener.
    fn set_bound(&self, bound: bool) {
        lock(&self.turns).bound = bound;
        self.turns_changed.notify_all();
    }
}

/// A turn to answer, given back when dropped (also when answering panics).
struct Turn<'a>(&'a Shared);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.0.turns).answering -= 1;
        self.0.turns_changed.notify_all();
    }
}

/// A running demo server. Stops (and joins its threads) on [`stop`](Self::stop) or when dropped.
pub struct DemoServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
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
/// returns as soon as it is bound.
///
/// Errors: the address does not resolve or cannot be bound (the message names `name` and `addr`; the
/// kind is kept, e.g. [`io::ErrorKind::AddrInUse`]), or `behaviour` is out of range
/// ([`io::ErrorKind::InvalidInput`]).
pub fn spawn(name: &str, addr: &str, behaviour: Behaviour) -> io::Result<DemoServer> {
    behaviour
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {e}")))?;
    let listener = TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            " (is another server already using that port?)"
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!("{name}: cannot listen on {addr}: {e}{hint}"),
        )
    })?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        addr: local,
        hello: format!(
            r#"{{"message":"Hello from {}","address":":{}"}}"#,
            json_escape(name),
            local.port()
        ),
        state: Mutex::new(State::new(behaviour)),
        turns: Mutex::new(Turns {
            stopped: false,
            answering: 0,
            listening: Listening::Yes,
            bound: true,
        }),
        turns_changed: Condvar::new(),
        connections: Mutex::new(Connections::default()),
        connection_closed: Condvar::new(),
    });
    let accepting = Arc::clone(&shared);
    // Names are built from the port, not `name`, which may hold anything (even a NUL byte).
    let acceptor = std::thread::Builder::new()
        .name(format!("demo-{}", local.port()))
        .spawn(move || accept(listener, &accepting))?;
    log::info!("{name}: listening on {local}");
    Ok(DemoServer {
        shared,
        addr: local,
        acceptor: Some(acceptor),
    })
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

    /// Stops listening (`true`): the port refuses connections and every open connection is
    /// closed, as when a server dies. Or listens again on the same port (`false`, the default).
    /// Returns once done. `/control?refuse=10s` does the first for a while, then the second by
    /// itself; this is the way to refuse until told otherwise, which `/control` cannot offer:
    /// while the server refuses, no `/control` request can reach it.
    ///
    /// Errors when not done within 5 s (the port taken by another program meanwhile, say; the
    /// server keeps trying every second).
    pub fn set_refusing(&self, refuse: bool) -> Result<(), String> {
        let listening = if refuse {
            Listening::NoUntilTold
        } else {
            Listening::Yes
        };
        self.shared.set_listening(listening);
        if self.shared.wait_bound(!refuse) {
            Ok(())
        } else {
            let doing = if refuse { "listening" } else { "refusing" };
            Err(format!("{}: still {doing} after 5 s", self.shared.name))
        }
    }

    /// Stops the server: requests already received are answered (injected delays are cut
    /// short; a connection still writing its answer after 2 s is closed), idle connections are
    /// closed, then the threads are joined. Dropping the server does the same.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        lock(&self.shared.turns).stopped = true;
        self.shared.turns_changed.notify_all();
        // The acceptor sleeps in accept(): a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&reachable(self.addr), Duration::from_secs(1));
        // An acceptor that panicked has nothing left to clean up.
        let _ = acceptor.join();
        // No connection is added from here on. End their reads: an idle one ends at once, one
        // being answered writes its answer first, then finds the read side closed.
        let mut connections = lock(&self.shared.connections);
        connections.shut_down(Shutdown::Read);
        let deadline = Instant::now() + STOP_GRACE;
        while !connections.open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // A client that takes nothing of a large answer would hold us for ever.
                connections.shut_down(Shutdown::Both);
            }
            let wait = if left.is_zero() {
                Duration::from_millis(100)
            } else {
                left
            };
            connections = self
                .shared
                .connection_closed
                .wait_timeout(connections, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        log::info!("{}: stopped", self.shared.name);
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `addr` as a client can reach it: a wildcard address becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Accepts connections until the server stops, and starts a thread for each.
///
/// While the server refuses connections it holds no listener, so the port refuses them as a
/// dead server's does, and it closes every connection that was open (see [`stop_listening`]).
/// When the refusal ends, it binds the same address again.
fn accept(listener: TcpListener, shared: &Arc<Shared>) {
    let port = shared.addr.port();
    let mut listener = Some(listener);
    loop {
        let Some(bound) = listener.as_ref() else {
            if !shared.wait_while_refusing() {
                return;
            }
            listener = listen_again(shared);
            continue;
        };
        let accepted = bound.accept();
        if shared.is_stopped() {
            return;
        }
        // Not whether the refusal is still on: a short one that ended meanwhile is done too.
        if lock(&shared.turns).listening != Listening::Yes {
            // This connection (maybe our own wake-up call) is closed unanswered with the rest.
            drop(accepted);
            listener = None;
            stop_listening(shared);
            continue;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait a little rather than spin.
                log::warn!("{}: accepting a connection failed: {e}", shared.name);
                shared.pause(Duration::from_millis(100));
                continue;
            }
        };
        let Some(id) = register(shared, &stream) else {
            continue;
        };
        let serving = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("demo-{port}-{id}"))
            .spawn(move || {
                let _open = Open(&serving, id);
                serve(stream, &serving);
            });
        if let Err(e) = spawned {
            log::warn!("{}: cannot start a connection thread: {e}", shared.name);
            unregister(shared, id);
        }
    }
}

/// What a server that dies does to its connections, once its listener is dropped: every open
/// one is closed, whatever it was doing, so a client's pooled connection fails at its next use.
fn stop_listening(shared: &Shared) {
    let closed = lock(&shared.connections).shut_down(Shutdown::Both);
    shared.set_bound(false);
    log::info!(
        "{}: refusing connections: nothing listens on {}, {closed} open connection(s) closed",
        shared.name,
        shared.addr
    );
}

/// Binds the server's address again after a refusal. `None` (after a pause, so that the
/// acceptor does not spin) when it cannot, e.g. another program took the port meanwhile.
fn listen_again(shared: &Shared) -> Option<TcpListener> {
    match TcpListener::bind(shared.addr) {
        Ok(listener) => {
            shared.set_bound(true);
            log::info!("{}: listening again on {}", shared.name, shared.addr);
            Some(listener)
        }
        Err(e) => {
            log::warn!(
                "{}: cannot listen again on {}: {e}; trying again in 1 s",
                shared.name,
                shared.addr
            );
            shared.pause(Duration::from_secs(1));
            None
        }
    }
}

/// Adds `stream` to the open connections; `None` (the connection is to be closed) when there
/// are [`MAX_CONNECTIONS`] already, or it cannot be shared.
fn register(shared: &Shared, stream: &TcpStream) -> Option<u64> {
    let mut connections = lock(&shared.connections);
    if connections.open.len() >= MAX_CONNECTIONS {
        log::warn!(
            "{}: {MAX_CONNECTIONS} connections open already: closing a new one",
            shared.name
        );
        return None;
    }
    let handle = stream.try_clone().ok()?;
    let id = connections.next_id;
    connections.next_id += 1;
    connections.open.insert(id, handle);
    Some(id)
}

fn unregister(shared: &Shared, id: u64) {
    lock(&shared.connections).open.remove(&id);
    shared.connection_closed.notify_all();
}

/// Takes a connection off the open ones when its thread ends, however it ends.
struct Open<'a>(&'a Shared, u64);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        unregister(self.0, self.1);
    }
}

/// Serves the requests of one connection, one after the other, until the client closes it, an
/// answer closes it, or the server stops.
fn serve(stream: TcpStream, shared: &Shared) {
    let mut rng = Rng::seeded();
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let head = match http::read_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(http::HeadError::Io(e)) => {
                log::debug!("{}: a connection broke off in a head: {e}", shared.name);
                return;
            }
            Err(http::HeadError::Bad(status, reason)) => {
                let _ = http::write_answer(&mut writer, &plain_answer(status, reason));
                return;
            }
        };
        if let (Some(key), "/ws") = (&head.websocket_key, path(&head.target)) {
            // The connection is a WebSocket from now on, on this thread; it takes no turn to
            // answer, so open WebSockets never keep requests waiting.
            let read_ahead = reader.buffer().to_vec();
            if let Err(e) = websocket::echo(writer, read_ahead, key, &shared.name) {
                log::debug!("{}: WebSocket handshake failed: {e}", shared.name);
            }
            return;
        }
        if head.expects_continue && http::write_continue(&mut writer).is_err() {
            return;
        }
        if let Err(e) = http::skip_body(&mut reader, head.body) {
            if e.kind() == io::ErrorKind::InvalidData {
                let _ = http::write_answer(&mut writer, &plain_answer(400, "bad chunked body"));
            }
            return;
        }
        let turn = shared.turn();
        let keep_alive = respond(&head, &mut writer, shared, &mut rng);
        drop(turn);
        if !keep_alive || shared.is_stopped() {
            let _ = writer.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// An answer of ours to a request we could not read, closing the connection.
fn plain_answer(status: u16, reason: &'static str) -> http::Answer<'static> {
    http::Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: reason.as_bytes(),
        head_only: false,
        connection: Some("close"),
        cut: false,
    }
}

/// Answers one request; true when the connection may carry another one. After an answer that
/// asks for it (`/control?refuse=10s`), the server stops listening.
fn respond(head: &http::Head, writer: &mut TcpStream, shared: &Shared, rng: &mut Rng) -> bool {
    let started = Instant::now();
    let reply = route(&head.target, shared, rng);
    log::debug!(
        "{}: {} {} -> {}{} in {:?}",
        shared.name,
        head.method,
        head.target,
        reply.status,
        if reply.cut { " (cut mid-body)" } else { "" },
        started.elapsed()
    );
    // A cut answer's head is the one a whole answer would have: like a server that crashes
    // while sending, it announces nothing of the close that follows.
    let connection = match (head.keep_alive, head.http10) {
        (false, _) => Some("close"),
        (true, true) => Some("keep-alive"),
        (true, false) => None,
    };
    let answer = http::Answer {
        status: reply.status,
        content_type: reply.content_type,
        body: reply.body.as_bytes(),
        head_only: head.method == "HEAD",
        connection,
        cut: reply.cut,
    };
    let written = http::write_answer(writer, &answer);
    // After the answer, not before: stopping closes every connection, this one too.
    if let Some(refuse) = reply.refuse {
        let until = Instant::now() + refuse;
        shared.set_listening(Listening::No { until });
    }
    if let Err(e) = written {
        log::debug!("{}: client went away before the answer: {e}", shared.name);
        return false;
    }
    head.keep_alive && !reply.cut
}

/// The largest answer `/bytes/N` gives. 64 MiB.
const MAX_BYTES: usize = 64 << 20;

/// An answer, kept apart from the connection so routing is plain code.
#[derive(Debug, PartialEq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Send half of the body, then close (the `drop` switch).
    cut: bool,
    /// After the answer, stop listening for this long (the `refuse` switch).
    refuse: Option<Duration>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            cut: false,
            refuse: None,
        }
    }

    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
            cut: false,
            refuse: None,
        }
    }
}

/// The path of a request target: what comes before `?`.
fn path(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

fn route(url: &str, shared: &Shared, rng: &mut Rng) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match path {
        "/ws" => Reply::text(
            400,
            "/ws speaks WebSocket (RFC 6455): connect with a WebSocket client, e.g. \
             python3 -m websockets ws://HOST:PORT/ws\n",
        ),
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
                Ok((changed, refuse)) => {
                    let json = changed.to_json(refuse.unwrap_or_default());
                    if changed != *state || refuse.is_some() {
                        log::info!("{}: /control: now {json}", shared.name);
                    }
                    *state = changed;
                    Reply {
                        refuse,
                        ..Reply::json(200, json)
                    }
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
        _ => {
            // Copy, so the lock is not held through the delay.
            let behaviour = shared.state().behaviour;
            let mut reply = match path.strip_prefix("/bytes/") {
                // A large answer, for watching slow readers (README: slow clients).
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n <= MAX_BYTES => Reply::text(200, "x".repeat(n)),
                    _ => Reply::text(
                        400,
                        format!("/bytes/N takes a number of bytes up to {MAX_BYTES}"),
                    ),
                },
                None => {
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
            };
            reply.cut = behaviour.drop;
            reply
        }
    }
}

/// Applies a `/control` query to `state`, and reads how long the server is to stop listening
/// after the answer (`refuse=10s`; `None` when not asked, or `refuse=0`). All or nothing: on
/// the first bad parameter the error names it and the caller keeps the old state. An empty
/// query changes nothing (a way to read the state).
fn apply_control(mut state: State, query: &str) -> Result<(State, Option<Duration>), String> {
    let mut refuse = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |reason: String| format!("bad {key} {value:?}: {reason}");
        let switch = |value: &str| match value {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad("expected true or false".into())),
        };
        match key {
            "delay" => state.behaviour.delay = parse_duration(value).map_err(bad)?,
            "fail_rate" => state.behaviour.fail_rate = parse_fail_rate(value).map_err(bad)?,
            "status" => state.behaviour.fail_status = parse_fail_status(value).map_err(bad)?,
            "drop" => state.behaviour.drop = switch(value)?,
            "healthy" => state.healthy = switch(value)?,
            "refuse" => refuse = parse_refuse(value).map_err(bad)?,
            _ => {
                return Err(format!(
                    "unknown control parameter {key:?}; known: delay, fail_rate, status, \
                     healthy, refuse, drop"
                ))
            }
        }
    }
    Ok((state, refuse))
}

/// Parses how long `refuse` stops the server listening: a duration up to [`MAX_REFUSE`], `0`
/// for not at all. Not `true`: nothing could switch it back, as no `/control` request reaches
/// a server that does not listen.
fn parse_refuse(text: &str) -> Result<Option<Duration>, String> {
    let refuse = parse_duration(text).map_err(|e| {
        if text == "true" || text == "false" {
            "expected how long to refuse connections, like 10s: while it refuses, no \
             /control request reaches this server, so it listens again by itself"
                .to_string()
        } else {
            e
        }
    })?;
    if refuse > MAX_REFUSE {
        return Err("at most 1h".into());
    }
    Ok(Some(refuse).filter(|d| !d.is_zero()))
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
  GET /ws       a WebSocket echo: every message comes back as \"{name}: ...\"
  GET /control?delay=50ms&fail_rate=0.5&status=503&healthy=false&drop=true&refuse=10s
                changes any of these while running and answers the result as JSON:
                drop=true cuts every answer mid-body; refuse=10s stops listening for 10 s
                (connections refused, open ones closed, as if dead), then listens again

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
    let _ = env_logger::Builder::from_env(env).format(line).try_init();
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
        let state = State::new(behaviour);
        let json = state.to_json(Duration::ZERO);
        log::info!("{name}: misbehaving from the start: {json}");
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
    fn ws_echoes_websocket_messages_prefixed_with_the_name() {
        use tungstenite::Message;
        let server = start("server1");
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let url = format!("ws://{}/ws", server.addr());
        let (mut ws, _) = tungstenite::client::client(url, stream).expect("handshake");
        ws.send(Message::text("hello")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("server1: hello"));
        ws.send(Message::binary(vec![0u8, 255])).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(b"server1: \0\xff".to_vec())
        );
        ws.send(Message::Ping(b"p".to_vec().into())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::Pong(b"p".to_vec().into()));
        ws.close(None).unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(_)) => {}
                Err(tungstenite::Error::ConnectionClosed) => break,
                other => panic!("expected the close handshake, got {other:?}"),
            }
        }
        // Without a handshake, /ws says what it is.
        let answer = get(server.addr(), "/ws");
        assert_eq!(answer.status, 400);
        assert!(answer.body.contains("WebSocket"), "{}", answer.body);
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
            r#"{"delay_ms":0,"fail_rate":0,"fail_status":503,"drop":false,"healthy":false,"refuse_ms":0}"#
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
            r#"{"delay_ms":50,"fail_rate":0,"fail_status":503,"drop":false,"healthy":true,"refuse_ms":0}"#
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
            r#"{"delay_ms":0,"fail_rate":1,"fail_status":500,"drop":false,"healthy":true,"refuse_ms":0}"#
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
            ("refuse=yes", "refuse"),
            ("refuse=true", "listens again by itself"),
            ("refuse=2h", "at most 1h"),
            ("drop=1", "drop"),
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
            r#"{"delay_ms":0,"fail_rate":0,"fail_status":503,"drop":false,"healthy":true,"refuse_ms":0}"#
        );
    }

    /// Reads one answer framed by its `Content-Length` from a keep-alive connection: the
    /// head, and the body bytes that came before the connection ended (fewer when cut).
    fn read_answer(stream: &mut TcpStream) -> (String, Vec<u8>) {
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).expect("read head");
            assert_eq!(
                n,
                1,
                "closed inside a head: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let length: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a Content-Length");
        let mut body = Vec::new();
        stream.take(length).read_to_end(&mut body).unwrap();
        (head, body)
    }

    fn connect(server: &DemoServer) -> TcpStream {
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    /// A keep-alive connection that has carried one request, as a balancer keeps them.
    fn used(server: &DemoServer) -> TcpStream {
        let mut stream = connect(server);
        write!(stream, "GET / HTTP/1.1\r\n\r\n").unwrap();
        let (head, _) = read_answer(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        stream
    }

    /// True when the server closed `stream` without sending a byte.
    fn closed_unanswered(stream: &mut TcpStream) -> bool {
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    #[test]
    fn keeps_connections_alive_and_skips_request_bodies() {
        let server = start("server1");
        let mut stream = connect(&server);
        // A body with a length, a chunked one after 100 Continue, then a HEAD.
        write!(stream, "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        let (head, body) = read_answer(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(!head.contains("Connection"), "{head}");
        assert!(body.starts_with(br#"{"message":"Hello from server1""#));
        write!(
            stream,
            "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        )
        .unwrap();
        let mut continue_line = [0u8; 25];
        stream.read_exact(&mut continue_line).unwrap();
        assert_eq!(&continue_line, b"HTTP/1.1 100 Continue\r\n\r\n");
        write!(stream, "3\r\nxyz\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            read_answer(&mut stream).0.lines().next(),
            Some("HTTP/1.1 200 OK")
        );
        write!(stream, "HEAD /c HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("Connection: close\r\n\r\n"), "{rest}");
        assert!(rest.ends_with("\r\n\r\n"), "HEAD has no body: {rest}");

        // HTTP/1.0 keeps the connection only when it asks to.
        let mut stream = connect(&server);
        write!(stream, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(read_answer(&mut stream)
            .0
            .contains("Connection: keep-alive"));
        write!(stream, "GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(read_answer(&mut stream).0.contains("Connection: close"));
        assert!(closed_unanswered(&mut stream));

        // What cannot be read is answered 400 and the connection closed.
        let mut stream = connect(&server);
        write!(stream, "GARBAGE\r\n\r\n").unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        assert!(rest.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{rest}");
    }

    /// True when a connection to `addr` is refused: nothing listens.
    fn refuses(addr: SocketAddr) -> bool {
        TcpStream::connect(addr).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    }

    /// Polls `done` every 10 ms for up to 10 s.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn refuse_stops_listening_for_a_while_and_closes_open_connections() {
        let server = start("server3");
        // A keep-alive connection from before the switch, as a balancer keeps them.
        let mut pooled = used(&server);

        // The switch is answered first; then nothing listens, and the open connection closes.
        let answer = get(server.addr(), "/control?refuse=3s");
        assert_eq!(answer.status, 200);
        assert!(
            answer.body.ends_with(r#""refuse_ms":3000}"#),
            "{}",
            answer.body
        );
        assert!(eventually(|| refuses(server.addr())), "still listening");
        assert!(closed_unanswered(&mut pooled), "the open connection stayed");

        // Three seconds later it listens again by itself, on the same port.
        assert!(
            eventually(|| !refuses(server.addr())),
            "never listened again"
        );
        assert_eq!(get(server.addr(), "/").status, 200);
    }

    #[test]
    fn refusing_until_told_otherwise_is_for_code_in_the_same_process() {
        let server = start("server3");
        let mut pooled = used(&server);

        server.set_refusing(true).unwrap();
        assert!(refuses(server.addr()));
        assert!(closed_unanswered(&mut pooled));
        server.set_refusing(false).unwrap();
        assert_eq!(get(server.addr(), "/").status, 200);

        // Stopping a refusing server does not wait for anything.
        server.set_refusing(true).unwrap();
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn drop_cuts_answers_mid_body_and_closes() {
        let server = start("server2");
        let answer = get(server.addr(), "/control?drop=true");
        assert!(answer.body.contains(r#""drop":true"#), "{}", answer.body);
        assert!(server.behaviour().drop);

        for target in ["/", "/bytes/1000"] {
            let mut stream = connect(&server);
            write!(stream, "GET {target} HTTP/1.1\r\n\r\n").unwrap();
            let (head, body) = read_answer(&mut stream);
            let announced: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), announced / 2, "{target}: {head}");
            assert!(!head.contains("Connection"), "no close announced: {head}");
            assert!(
                closed_unanswered(&mut stream),
                "{target}: more after the cut"
            );
        }
        // Health checks and /control are answered whole.
        let mut stream = connect(&server);
        write!(stream, "GET /health HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(read_answer(&mut stream).1, b"ok");

        get(server.addr(), "/control?drop=false");
        let mut stream = connect(&server);
        write!(stream, "GET / HTTP/1.1\r\n\r\n").unwrap();
        let (_, body) = read_answer(&mut stream);
        assert!(body.ends_with(b"}"), "whole again");
    }

    #[test]
    fn stop_closes_idle_keep_alive_connections() {
        let server = start("server1");
        let mut idle = used(&server);
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(closed_unanswered(&mut idle));
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
                    fail_status: 502,
                    drop: false
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
