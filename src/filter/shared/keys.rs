//! The names the balancers share in Redis, all starting with the `prefix=` of the `shared` line
//! (`lb:` by default). A client's keys carry its address as a hash tag (`{192.0.2.7}`), so that
//! in a Redis Cluster they live in one slot and the script may touch them together.
//!
//! | name | kind | what | expires |
//! | --- | --- | --- | --- |
//! | `lb:rl:{IP}:RULE` | string | the client's tat under RULE (its `path=`, `*` for the general rule), microseconds | when the bucket is full again |
//! | `lb:hits:{IP}` | list | the client's recent rate-limit refusals (shared bans only) | a window after the last |
//! | `lb:ban:{IP}` | string | when the client's ban ends, microseconds | at that end |
//! | `lb:bans` | sorted set | every ban: member IP, score its end (microseconds); read again after a reconnect | ended ones are removed when a ban is added |
//! | `lb:instances` | sorted set | the balancers' heartbeats: member an instance's id, score its last beat (ms) (`instances=auto` only) | beats older than 3 s are removed at each beat |
//! | `lb:bans` (channel) | pub/sub | `IP END NOW` for each new ban (microseconds, Redis's clock) | |

use std::net::IpAddr;

/// Key and channel names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// The names under `prefix`.
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// `lb:rl:{IP}:RULE`: `rule` is the rule's path, or `None` for the general rule (`*`).
    pub(crate) fn rate(&self, client: IpAddr, rule: Option<&str>) -> String {
        format!("{}rl:{{{client}}}:{}", self.prefix, rule.unwrap_or("*"))
    }

    /// `lb:hits:{IP}`.
    pub(crate) fn hits(&self, client: IpAddr) -> String {
        format!("{}hits:{{{client}}}", self.prefix)
    }

    /// `lb:ban:{IP}`.
    pub(crate) fn ban(&self, client: IpAddr) -> String {
        format!("{}ban:{{{client}}}", self.prefix)
    }

    /// `lb:bans`: the sorted set of bans, and the channel they are published on.
    pub(crate) fn bans(&self) -> String {
        format!("{}bans", self.prefix)
    }

    /// `lb:instances`: the heartbeats.
    pub(crate) fn instances(&self) -> String {
        format!("{}instances", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_client_as_a_hash_tag() {
        let k = Keys::new("lb:");
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(k.rate(v4, None), "lb:rl:{192.0.2.7}:*");
        assert_eq!(k.rate(v6, Some("/login")), "lb:rl:{2001:db8::1}:/login");
        assert_eq!(k.hits(v4), "lb:hits:{192.0.2.7}");
        assert_eq!(k.ban(v4), "lb:ban:{192.0.2.7}");
        assert_eq!(
            (k.bans(), k.instances()),
            ("lb:bans".into(), "lb:instances".into())
        );
    }
}
