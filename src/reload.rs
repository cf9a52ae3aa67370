//! Reloading the configuration without dropping a request (SIGHUP, or the config file
//! changed): backends that stay keep their state, new ones join with slow start, removed ones
//! leave once their requests finish; what needs a restart is said so and kept.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::balance::backend::Backend;
use crate::maintenance::{self, MaintenanceSettings};
use crate::proxy::ProxySettings;
use crate::state::Shared;
use crate::Config;

pub(crate) fn proxy_settings(config: &Config) -> ProxySettings {
    ProxySettings {
        connect_timeout: config.timeouts.connect,
        response_timeout: config.timeouts.response,
        send_timeout: config.timeouts.send_timeout(),
        retries: config.retries.count,
        retry_timeouts: config.retries.on_timeout,
        failure_statuses: config.breaker.failure_statuses.clone(),
        max_request_head: config.limits.max_head,
        upgrade: config.upgrade.clone(),
    }
}

/// The settings a reload cannot change, because they shape sockets, threads and buffers
/// made at start, with the words that name them: the one list of them. `new` keeps the running
/// value of each, and a change is logged.
fn keep_restart_only(new: &mut Config, current: &Config) {
    macro_rules! keep {
        ($($what:literal: $($field:ident).+;)*) => {$(
            if new.$($field).+ != current.$($field).+ {
                log::warn!(
                    "reload: a change of {} needs a restart; keeping the running one",
                    $what
                );
                new.$($field).+ = current.$($field).+.clone();
            }
        )*};
    }
    keep! {
        "listen": listen;
        "admin": admin;
        "admin token=": admin_token;
        "workers": workers;
        "queue": queue;
        "timeouts client=": timeouts.client;
        "timeouts head=": timeouts.head;
        "timeouts body=": timeouts.body;
        "timeouts queue=": timeouts.queue;
        "timeouts tunnel=": timeouts.tunnel;
        "limits (the front end's: max_request_line=, max_head=, max_headers=, max_connections=, tunnels=)": limits;
        "request_buffering": request_buffering;
        "buffers": buffers;
        "shared (the Redis of shared limits)": filter.shared;
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
        keep_restart_only(&mut new, &current);

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
            .reconfigure(proxy_settings(&new), new.retries.budget_percent);
        self.filter.reconfigure(new.filter.clone());
        let configured = self.access_log.configure(
            new.access_log,
            new.access_log_path.as_deref(),
            new.access_log_format,
        );
        if let Err(e) = configured {
            log::warn!("reload: {e}; keeping the running access log");
            new.access_log = current.access_log;
            new.access_log_path = current.access_log_path.clone();
            new.access_log_format = current.access_log_format;
        }
        self.explain.store(new.explain, Relaxed);
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
