//! The upstream side of forwarding: the ureq agents that hold the connections to backends, one
//! per backend and per worker thread, with the settings they were made for. Beside this file, ureq's two plug-ins:
//! `transport.rs` (the TCP connector) and `resolver.rs` (the name cache).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::time::Duration;

use parking_lot::RwLock;

use super::resolver::CachingResolver;
use super::transport::BackendConnector;

/// What an agent is made with, from [`super::ProxySettings`]: a change of any of them (on
/// reload) makes new agents, with new connection pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AgentSettings {
    /// Backend connect timeout.
    pub connect_timeout: Duration,
    /// Time for the response head, and between body reads.
    pub response_timeout: Duration,
    /// Time each write of a request may take.
    pub send_timeout: Duration,
    /// The largest request head, which the output buffer must hold.
    pub max_request_head: usize,
}

/// One ureq agent (and so one connection pool) per backend and per worker thread, made on first
/// use.
///
/// Why per thread: ureq's pool is shared by everyone using the agent, behind a mutex, and every
/// request takes a connection from it and gives it back, which trims the pool by walking every idle
/// connection and comparing its host (`Pool::purge`): about 9 000 instructions per request with
/// 64 workers sharing one pool per backend, a seventh of the whole (callgrind). A worker forwards
/// one request at a time, so its own pool never holds more than one connection per backend: the
/// walk is one step, the mutex is never contended, and the connection the worker takes is the
/// one it used last. The backends see one keep-alive connection per worker that forwarded to
/// them, as before.
///
/// A reload that changes the settings or the backends bumps the generation: each worker drops
/// its agents of older generations (and their idle connections) the next time it forwards.
pub(super) struct AgentCache {
    /// Tells this cache's agents from another proxy's in the same process (tests run several).
    id: u64,
    generation: AtomicU64,
    /// What new agents are made with, and the backends they are for.
    settings: RwLock<(AgentSettings, HashSet<String>)>,
    /// One name cache for every agent.
    resolver: CachingResolver,
}

/// An agent a worker thread holds.
struct Held {
    cache: u64,
    generation: u64,
    url: String,
    agent: ureq::Agent,
}

thread_local! {
    /// This thread's agents, a handful: one per backend (per proxy) it has forwarded to.
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
}

impl AgentCache {
    /// An empty cache for agents made with `settings`.
    pub(super) fn new(settings: AgentSettings) -> AgentCache {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        AgentCache {
            id: NEXT.fetch_add(1, Relaxed),
            generation: AtomicU64::new(0),
            settings: RwLock::new((settings, HashSet::new())),
            resolver: CachingResolver::default(),
        }
    }

    /// Runs `f` with this thread's agent for the backend at `url`, made on first use.
    pub(super) fn with_agent<T>(&self, url: &str, f: impl FnOnce(&ureq::Agent) -> T) -> T {
        let generation = self.generation.load(Acquire);
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            let (id, stale) = (self.id, |h: &Held| {
                h.cache == self.id && h.generation != generation
            });
            if held.iter().any(stale) {
                held.retain(|h| !stale(h));
            }
            let at = match held.iter().position(|h| h.cache == id && h.url == url) {
                Some(at) => at,
                None => {
                    let agent = new_agent(&self.settings.read().0, self.resolver.clone());
                    held.push(Held {
                        cache: id,
                        generation,
                        url: url.to_string(),
                        agent,
                    });
                    held.len() - 1
                }
            };
            f(&held[at].agent)
        })
    }

    /// Applies new settings for the backends at `urls` (reload). When the settings or the
    /// backends changed, the agents of every thread are made again on next use, so that none
    /// keeps old timeouts or a removed backend's connections; requests in flight finish on the
    /// old ones. Otherwise every pooled connection stays.
    pub(super) fn reconfigure(&self, settings: AgentSettings, urls: HashSet<String>) {
        let mut current = self.settings.write();
        if *current != (settings, urls.clone()) {
            *current = (settings, urls);
            self.generation.fetch_add(1, Release);
        }
    }

    /// The URLs this thread has an agent for, of this cache's current generation.
    #[cfg(test)]
    pub(super) fn urls(&self) -> Vec<String> {
        let generation = self.generation.load(Acquire);
        HELD.with(|held| {
            let held = held.borrow();
            let mine = held.iter().filter(|h| h.cache == self.id);
            mine.filter(|h| h.generation == generation)
                .map(|h| h.url.clone())
                .collect()
        })
    }
}

/// The transparent ureq agent for `settings`: redirects are not followed, every status is an
/// answer rather than an error, no header is added (no `User-Agent`, `Accept` or
/// `Accept-Encoding`), so bodies are never decompressed, and any method is sent.
fn new_agent(settings: &AgentSettings, resolver: CachingResolver) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(ureq::config::AutoHeaderValue::None)
        .accept(ureq::config::AutoHeaderValue::None)
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .allow_non_standard_methods(true)
        .timeout_connect(Some(settings.connect_timeout))
        .timeout_recv_response(Some(settings.response_timeout))
        .timeout_per_read(Some(settings.response_timeout))
        // Every write of the head and the body, so that a backend that stops reading (frozen,
        // partitioned: its kernel still accepts) cannot hold a worker for ever.
        .timeout_per_write(Some(settings.send_timeout))
        // One worker's agent for one backend: it never needs two idle connections.
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .max_idle_age(Duration::from_secs(15))
        .max_response_header_size(64 * 1024)
        // Each connection to a backend holds these two buffers, zeroed (so resident) once
        // used. ureq's defaults (128 KiB each) cost 256 KiB per pooled connection: with 64
        // workers that was 20 MiB of the balancer's memory. The input buffer must hold the
        // largest response head (64 KiB), the output buffer the largest request head with the
        // forwarding headers.
        .input_buffer_size(64 * 1024)
        .output_buffer_size((settings.max_request_head + 8 * 1024).max(32 * 1024))
        .build();
    ureq::Agent::with_parts(config, BackendConnector, resolver)
}
