//! The upstream side of forwarding: the ureq agents that hold the connections to backends, one
//! per backend, with the settings they were made for. Beside this file, ureq's two plug-ins:
//! `transport.rs` (the TCP connector) and `resolver.rs` (the name cache).

use std::collections::{HashMap, HashSet};
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
    /// Idle keep-alive connections kept to each backend.
    pub idle_connections: usize,
    /// The largest request head, which the output buffer must hold.
    pub max_request_head: usize,
}

/// One ureq agent (and so one connection pool) per backend URL, made on first use and shared
/// by all workers.
///
/// A single agent would do, but ureq's pool looks for a connection, and trims itself after each
/// request, by comparing every idle connection's host with each host it holds: with 3 backends
/// and 64 workers callgrind put 15 % of the balancer's instructions there. One pool per backend
/// holds one host.
pub(super) struct AgentCache {
    agents: RwLock<Agents>,
}

struct Agents {
    /// What the agents were made for; a change makes new ones.
    made_for: AgentSettings,
    by_url: HashMap<String, ureq::Agent>,
}

impl AgentCache {
    /// An empty cache for agents made with `settings`.
    pub(super) fn new(settings: AgentSettings) -> AgentCache {
        AgentCache {
            agents: RwLock::new(Agents {
                made_for: settings,
                by_url: HashMap::new(),
            }),
        }
    }

    /// The agent for the backend at `url`, made on first use with the settings `current` gives
    /// (asked only then).
    pub(super) fn get(&self, url: &str, current: impl FnOnce() -> AgentSettings) -> ureq::Agent {
        if let Some(agent) = self.agents.read().by_url.get(url) {
            return agent.clone();
        }
        let settings = current();
        let mut agents = self.agents.write();
        if agents.made_for != settings {
            // A reload replaced the settings since we read them: use a one-off agent rather
            // than keep one made from the old settings.
            return new_agent(&settings);
        }
        agents
            .by_url
            .entry(url.to_string())
            .or_insert_with(|| new_agent(&settings))
            .clone()
    }

    /// Applies new settings (reload): when they differ from what the agents were made for, every
    /// agent is dropped and remade on next use (requests in flight finish on the old ones).
    /// Agents of backends whose URL is not in `keep` are dropped, with their idle connections.
    pub(super) fn reconfigure(&self, settings: AgentSettings, keep: &HashSet<String>) {
        let mut agents = self.agents.write();
        if agents.made_for != settings {
            agents.made_for = settings;
            agents.by_url.clear();
        }
        agents.by_url.retain(|url, _| keep.contains(url));
    }

    /// The URLs that have an agent now.
    #[cfg(test)]
    pub(super) fn urls(&self) -> Vec<String> {
        self.agents.read().by_url.keys().cloned().collect()
    }
}

/// The transparent ureq agent for `settings`: redirects are not followed, every status is an
/// answer rather than an error, no header is added (no `User-Agent`, `Accept` or
/// `Accept-Encoding`), so bodies are never decompressed, and any method is sent.
fn new_agent(settings: &AgentSettings) -> ureq::Agent {
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
        .max_idle_connections(settings.idle_connections)
        .max_idle_connections_per_host(settings.idle_connections)
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
    ureq::Agent::with_parts(config, BackendConnector, CachingResolver::default())
}
