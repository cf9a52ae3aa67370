//! Active health checks: a GET of a configured path, judged with rise/fall thresholds.
//!
//! A backend is *healthy* until `fall` consecutive checks fail (default 3), then *unhealthy* until
//! `rise` consecutive checks pass (default 2): HAProxy's `inter 2s rise 2 fall 3`. One bad check
//! does not eject a backend and one good check does not bring it back, so a flapping backend is
//! not flooded. A check passes when the answer's status is 2xx or 3xx within the timeout.
//!
//! Worked example, rise 2 / fall 3, checks every 2 s: checks at t=0,2,4 fail → unhealthy at t=4;
//! t=6 passes, t=8 passes → healthy at t=8. A restarted backend is back within
//! `interval × rise` (plus the time to the next check).
//!
//! [`Health`] is the pure state machine; [`probe`] does one check over the network. The
//! maintenance thread runs each probe on its own short-lived thread, so a slow backend cannot
//! delay the checks of the others.

use std::time::Duration;

/// A health state change, reported once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Unhealthy → healthy after `rise` passes.
    Up,
    /// Healthy → unhealthy after `fall` failures.
    Down,
}

/// Rise/fall counting for one backend. Starts healthy, like HAProxy, so traffic flows at once.
#[derive(Clone, Debug)]
pub struct Health {
    rise: u32,
    fall: u32,
    healthy: bool,
    /// Consecutive results agreeing with a change of state.
    streak: u32,
}

impl Health {
    /// A healthy backend judged with `rise` and `fall`.
    pub fn new(rise: u32, fall: u32) -> Health {
        Health {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: true,
            streak: 0,
        }
    }

    /// True while the backend is considered healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Changes the thresholds (reload); the state is kept.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// Records one check result.
    pub fn observe(&mut self, passed: bool) -> Option<Transition> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(if passed {
            Transition::Up
        } else {
            Transition::Down
        })
    }
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx or 3xx.
    Passed(u16),
    /// Another status, or a transport error / timeout, with a short reason.
    Failed(String),
}

/// Checks `url` (backend base URL + path) with a GET that must answer 2xx/3xx within `timeout`.
/// Uses a fresh connection each time, like HAProxy's checks, so a check never waits behind
/// requests on a pooled connection.
pub fn probe(agent: &ureq::Agent, url: &str, timeout: Duration) -> Outcome {
    let request = agent
        .get(url)
        .header("User-Agent", "loadbalancer-health")
        .header("Connection", "close")
        .config()
        .timeout_global(Some(timeout))
        .build();
    match request.call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            // Read a little of the body so the backend is not left writing to a closed socket.
            let _ = response
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_vec();
            if (200..400).contains(&status) {
                Outcome::Passed(status)
            } else {
                Outcome::Failed(format!("status {status}"))
            }
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The agent health probes use: no redirects, statuses are results, no pooling.
pub fn probe_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_three_failures_and_rises_after_two_passes() {
        let mut h = Health::new(2, 3);
        assert!(h.is_healthy());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a pass breaks the streak");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(Transition::Down));
        assert!(!h.is_healthy());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None, "a failure breaks the rise streak");
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Transition::Up));
        assert!(h.is_healthy());
    }

    #[test]
    fn thresholds_of_one_switch_at_once() {
        let mut h = Health::new(1, 1);
        assert_eq!(h.observe(false), Some(Transition::Down));
        assert_eq!(h.observe(true), Some(Transition::Up));
    }
}
