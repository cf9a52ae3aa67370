//! Reloading the configuration without dropping a request (SIGHUP, or the config file
//! changed): backends that stay keep their state, new ones join with slow start, removed ones
//! leave once their requests finish; what needs a restart is said so and kept.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::backend::Backend;
use crate::maintenance::{self, MaintenanceSettings};
use crate::proxy::ProxySettings;
use crate::state::Shared;
use crate::Config;

pub(crate) fn proxy_settings(config: &Config) -> ProxySettings {
    ProxySettings {
        connect_timeout: config.connect_timeout,
        response_timeout: config.response_timeout,
        retries: config.retries,
        retry_timeouts: config.retry_timeouts,
        failure_statuses: config.breaker.failure_statuses.clone(),
        idle_connections: config.workers.max(16),
        max_request_head: config.max_head,
    }
}

impl Shared {
    /// Loads the configuration again (file and flags) and applies it. An invalid configuration
    /// is refused and the running one stays; the error names file, line and problem.
    pub fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock();
        let Some(loader) = &self.loader else {
            return Err("no configuration file to reload".into());
        };
        let config = loader().map_err(|e| e.to_string())?;
        self.apply(config);
        Ok(())
    }

    /// Applies `new` without dropping a request: backends that stay keep their stats and
    /// state (weight and policy updated), new ones join with slow start, removed ones leave the
    /// pool (requests in flight to them finish). Listen address, workers, queue size and the
    /// admin address need a restart; a change to them is logged and otherwise ignored.
    pub fn apply(&self, mut new: Config) {
        let now = self.now();
        let mut current = self.config.write();
        for (what, changed) in [
            ("listen", new.listen != current.listen),
            ("workers", new.workers != current.workers),
            ("queue", new.queue != current.queue),
            (
                "timeouts client=, head=, body= or queue=",
                (
                    new.client_timeout,
                    new.head_timeout,
                    new.body_timeout,
                    new.queue_timeout,
                ) != (
                    current.client_timeout,
                    current.head_timeout,
                    current.body_timeout,
                    current.queue_timeout,
                ),
            ),
            (
                "request_buffering",
                new.request_buffering != current.request_buffering,
            ),
            ("buffers", new.buffers != current.buffers),
            (
                "limits max_request_line=, max_head=, max_headers= or max_connections=",
                (
                    new.max_request_line,
                    new.max_head,
                    new.max_headers,
                    new.max_connections,
                ) != (
                    current.max_request_line,
                    current.max_head,
                    current.max_headers,
                    current.max_connections,
                ),
            ),
            (
                "admin",
                new.admin != current.admin || new.admin_token != current.admin_token,
            ),
        ] {
            if changed {
                log::warn!("reload: a change of {what} needs a restart; keeping the running one");
            }
        }
        new.listen = current.listen.clone();
        new.workers = current.workers;
        new.queue = current.queue;
        new.client_timeout = current.client_timeout;
        new.head_timeout = current.head_timeout;
        new.queue_timeout = current.queue_timeout;
        new.body_timeout = current.body_timeout;
        new.request_buffering = current.request_buffering;
        new.buffers = current.buffers.clone();
        new.max_request_line = current.max_request_line;
        new.max_head = current.max_head;
        new.max_headers = current.max_headers;
        new.max_connections = current.max_connections;
        new.admin = current.admin.clone();
        new.admin_token = current.admin_token.clone();

        let old = self.pool.backends();
        let mut backends = Vec::with_capacity(new.backends.len());
        for b in &new.backends {
            match old.iter().find(|o| o.url == b.url) {
                Some(kept) => {
                    if kept.weight() != b.weight {
                        log::info!(
                            "reload: backend {} weight {} -> {}",
                            kept.name,
                            kept.weight(),
                            b.weight
                        );
                    }
                    kept.set_policy(&new.breaker, &new.health, b.weight);
                    backends.push(Arc::clone(kept));
                }
                None => {
                    let id = self.next_id.fetch_add(1, Relaxed);
                    let added = Arc::new(Backend::with_policy(id, b, &new.breaker, &new.health));
                    if !new.slow_start.is_zero() {
                        added.join(now);
                    }
                    log::info!(
                        "reload: backend {} added with weight {}",
                        added.name,
                        b.weight
                    );
                    backends.push(added);
                }
            }
        }
        for o in &old {
            if !backends.iter().any(|b| b.id == o.id) {
                log::info!("reload: backend {} removed", o.name);
            }
        }
        self.pool.set_backends(backends);
        // Give new backends their slow-start weight now rather than at the next tick.
        maintenance::update_weights(&self.pool.backends(), now, new.slow_start);
        self.proxy
            .reconfigure(proxy_settings(&new), new.retry_budget_percent);
        self.filter.reconfigure(new.filter.clone());
        self.access_log.store(new.access_log, Relaxed);
        *self.maintenance.write() = MaintenanceSettings {
            health: new.health.clone(),
            slow_start: new.slow_start,
            watch: new.source.clone(),
        };
        *current = new;
        log::info!("configuration reloaded");
    }
}

impl maintenance::Reload for Shared {
    fn reload(&self) -> Result<(), String> {
        Shared::reload(self)
    }
}
