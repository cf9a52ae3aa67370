//! Readiness of the balancer itself, what `/health` answers: whatever sits in front of the
//! balancer (another load balancer, systemd, Kubernetes) routes around it while it is not ready.

use std::sync::atomic::Ordering::Relaxed;

use crate::Shared;

/// `Ok` while at least one backend can take traffic (healthy, breaker not open), every thread
/// the balancer needs runs and it is not shutting down; otherwise why not, as `/health` says it
/// after `not ready: `.
pub(super) fn check(shared: &Shared) -> Result<(), String> {
    if shared.draining.load(Relaxed) {
        return Err("shutting down".into());
    }
    if let Some((name, _)) = shared.threads.read().iter().find(|(_, alive)| !alive()) {
        return Err(format!("the {name} thread is not running"));
    }
    let backends = shared.pool.backends();
    if backends.iter().any(|b| b.is_available()) {
        return Ok(());
    }
    Err(format!(
        "none of the {} backends is available (unhealthy or breaker open)",
        backends.len()
    ))
}
