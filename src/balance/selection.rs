//! The server pool: the backends and the smooth weighted round-robin that picks one per request.
//!
//! # Smooth weighted round-robin (nginx's algorithm)
//!
//! Every backend carries a running score, `current`. For each pick, over the backends that are
//! available: add each one's weight to its `current`, choose the backend with the highest
//! `current` (the first one on a tie), then subtract the sum of the weights from the chosen one.
//! Over any window of `sum` picks each backend is chosen exactly `weight` times, and the picks of
//! a heavy backend are spread out instead of coming in a burst.
//!
//! Worked example, weights a=5, b=1, c=1 (sum 7), `current` shown after adding the weights:
//!
//! | pick | current (a, b, c) | chosen | after subtracting 7 |
//! |------|-------------------|--------|---------------------|
//! | 1    | 5, 1, 1           | a      | -2, 1, 1            |
//! | 2    | 3, 2, 2           | a      | -4, 2, 2            |
//! | 3    | 1, 3, 3           | b      | 1, -4, 3            |
//! | 4    | 6, -3, 4          | a      | -1, -3, 4           |
//! | 5    | 4, -2, 5          | c      | 4, -2, -2           |
//! | 6    | 9, -1, -1         | a      | 2, -1, -1           |
//! | 7    | 7, 0, 0           | a      | 0, 0, 0             |
//!
//! so the sequence is `a a b a c a a`, and then it repeats.
//!
//! The weight used is each backend's *effective* weight, which the maintenance thread lowers and
//! raises (slow start, latency, failures) around the configured one. Backends that are not
//! available (unhealthy, breaker open) are skipped, and so are the ones a retry has already
//! tried; their `current` is left alone so they rejoin where they were. Which backends are
//! available is not decided here but by the [`Availability`] the caller passes.

use std::sync::Arc;

use parking_lot::Mutex;

use super::backend::Backend;
use super::Availability;

#[derive(Debug)]
struct Peer {
    backend: Arc<Backend>,
    current: i64,
}

/// The backends and the state of the smooth WRR, behind one `parking_lot::Mutex`.
#[derive(Debug, Default)]
pub struct Pool {
    peers: Mutex<Vec<Peer>>,
}

/// One step of nginx's smooth weighted round-robin over `(weight, current)` pairs, where a
/// weight of zero means "skip". Returns the chosen index, or `None` when every weight is zero.
/// See the module documentation for a worked example.
///
/// This is the loop of nginx's `ngx_http_upstream_get_peer` (`ngx_http_upstream_round_robin.c`),
/// the whole algorithm; a zero weight stands for nginx's checks of peers that are down or were
/// already tried.
pub fn smooth_wrr_step(peers: &mut [(u32, i64)]) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for i in 0..peers.len() {
        let (weight, current) = peers[i];
        if weight == 0 {
            continue;
        }
        peers[i].1 = current + i64::from(weight);
        total += i64::from(weight);
        // Strictly greater: on a tie the first one stays, as in nginx.
        if best.is_none_or(|b| peers[i].1 > peers[b].1) {
            best = Some(i);
        }
    }
    let chosen = best?;
    peers[chosen].1 -= total;
    Some(chosen)
}

impl Pool {
    /// A pool over `backends`, in order.
    pub fn new(backends: Vec<Arc<Backend>>) -> Pool {
        let peers = backends
            .into_iter()
            .map(|backend| Peer {
                backend,
                current: 0,
            })
            .collect();
        Pool {
            peers: Mutex::new(peers),
        }
    }

    /// Picks the next backend by smooth WRR among those that `availability` admits and whose id is
    /// not in `skip`. `None` when no backend qualifies.
    pub fn pick(&self, availability: &dyn Availability, skip: &[u64]) -> Option<Arc<Backend>> {
        let mut peers = self.peers.lock();
        let mut weighed: Vec<(u32, i64)> = peers
            .iter()
            .map(|p| {
                let w = if skip.contains(&p.backend.id) {
                    0
                } else {
                    p.backend.effective_weight()
                };
                (w, p.current)
            })
            .collect();
        // The step runs on a copy and only the winner is asked whether it is available, so that
        // a half-open backend's single trial slot is only taken when it actually wins the pick.
        loop {
            let mut after = weighed.clone();
            let chosen = smooth_wrr_step(&mut after)?;
            if availability.admit(&peers[chosen].backend) {
                for (peer, (_, current)) in peers.iter_mut().zip(&after) {
                    peer.current = *current;
                }
                return Some(Arc::clone(&peers[chosen].backend));
            }
            // Not admitted: leave it out of this pick and weigh the rest again.
            weighed[chosen].0 = 0;
        }
    }

    /// True when some backend can take traffic now (healthy, breaker not open). Reserves
    /// nothing: a pick may still find none.
    pub fn any_available(&self) -> bool {
        self.peers.lock().iter().any(|p| p.backend.is_available())
    }

    /// The backends, in configured order.
    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.peers
            .lock()
            .iter()
            .map(|p| Arc::clone(&p.backend))
            .collect()
    }

    /// Replaces the set of backends (reload). Backends that stay keep their WRR position; new
    /// ones start at zero.
    pub fn set_backends(&self, backends: Vec<Arc<Backend>>) {
        let mut peers = self.peers.lock();
        let old: Vec<Peer> = std::mem::take(&mut *peers);
        *peers = backends
            .into_iter()
            .map(|backend| {
                let current = old
                    .iter()
                    .find(|p| p.backend.id == backend.id)
                    .map_or(0, |p| p.current);
                Peer { backend, current }
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::AlwaysAvailable;
    use crate::config::BackendConfig;

    fn sequence(weights: &[u32], n: usize) -> String {
        let mut peers: Vec<(u32, i64)> = weights.iter().map(|w| (*w, 0)).collect();
        (0..n)
            .map(|_| match smooth_wrr_step(&mut peers) {
                Some(i) => (b'a' + i as u8) as char,
                None => '-',
            })
            .collect()
    }

    #[test]
    fn nginx_sequences() {
        assert_eq!(sequence(&[5, 1, 1], 14), "aabacaaaabacaa");
        assert_eq!(sequence(&[1, 1, 1], 6), "abcabc");
        assert_eq!(sequence(&[2, 1], 6), "abaaba");
        assert_eq!(sequence(&[3, 2], 5), "ababa");
        assert_eq!(sequence(&[4, 3, 2], 9), "abcabacba");
    }

    #[test]
    fn one_zero_and_no_backends() {
        assert_eq!(sequence(&[7], 3), "aaa");
        assert_eq!(sequence(&[], 3), "---");
        assert_eq!(sequence(&[0, 0], 2), "--");
        assert_eq!(sequence(&[0, 2, 1], 3), "bcb");
    }

    #[test]
    fn window_counts_equal_weights() {
        let weights = [7, 3, 11, 1];
        let s = sequence(&weights, 22 * 5);
        for (i, w) in weights.iter().enumerate() {
            let c = (b'a' + i as u8) as char;
            assert_eq!(s.chars().filter(|x| *x == c).count(), *w as usize * 5);
        }
    }

    fn pool(weights: &[u32]) -> Pool {
        Pool::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let c = BackendConfig::parse(&format!("http://h{i}:1"), *w).unwrap();
                    Arc::new(Backend::new(i as u64, &c))
                })
                .collect(),
        )
    }

    fn picks(pool: &Pool, a: &dyn Availability, skip: &[u64], n: usize) -> String {
        (0..n)
            .map(|_| match pool.pick(a, skip) {
                Some(b) => (b'a' + b.id as u8) as char,
                None => '-',
            })
            .collect()
    }

    struct Only(u64);
    impl Availability for Only {
        fn admit(&self, b: &Backend) -> bool {
            b.id == self.0
        }
    }

    #[test]
    fn pool_pick_follows_the_sequence_and_skips() {
        let p = pool(&[5, 1, 1]);
        assert_eq!(picks(&p, &AlwaysAvailable, &[], 7), "aabacaa");
        assert_eq!(picks(&p, &AlwaysAvailable, &[0], 4), "bcbc");
        assert_eq!(picks(&p, &Only(2), &[], 3), "ccc");
        assert_eq!(picks(&p, &Only(2), &[2], 1), "-");
        assert_eq!(picks(&pool(&[]), &AlwaysAvailable, &[], 1), "-");
    }
}
