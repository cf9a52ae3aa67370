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
//!
//! To explain a decision (`X-Balancer-Explain`, see `explain.rs`), [`Pool::pick_explained`]
//! makes the same pick and also fills a [`PickTrace`]: each backend's score as the step compared
//! it (the table's "current" column) and after it, and the backends the step chose that could not
//! take the request. [`Pool::pick`] passes no trace, and so allocates nothing more for it.

use std::sync::Arc;

use parking_lot::Mutex;

use super::backend::{Backend, Unavailable};
use super::weights::Factors;
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
        self.pick_traced(availability, skip, None)
    }

    /// [`Pool::pick`], also telling `trace` what the pick saw: the scores of its last step, and
    /// (added to those already there) the backends it chose that `availability` refused, with
    /// the reason [`Availability::why_not`] gives.
    pub fn pick_explained(
        &self,
        availability: &dyn Availability,
        skip: &[u64],
        trace: &mut PickTrace,
    ) -> Option<Arc<Backend>> {
        self.pick_traced(availability, skip, Some(trace))
    }

    // Always inlined, so that `pick` (no trace) compiles to the pick alone: callgrind counts 6
    // instructions fewer per pick than before traces existed, where a call kept 9 more.
    #[inline(always)]
    fn pick_traced(
        &self,
        availability: &dyn Availability,
        skip: &[u64],
        mut trace: Option<&mut PickTrace>,
    ) -> Option<Arc<Backend>> {
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
            let chosen = smooth_wrr_step(&mut after);
            if let Some(refused) = chosen.filter(|c| !availability.admit(&peers[*c].backend)) {
                if let Some(trace) = trace.as_deref_mut() {
                    trace.note_refused(&peers[refused].backend, availability);
                }
                // Not admitted: leave it out of this pick and weigh the rest again.
                weighed[refused].0 = 0;
                continue;
            }
            if let Some(trace) = trace {
                trace.note_scores(&peers, &weighed, &after);
            }
            let chosen = chosen?;
            for (peer, (_, current)) in peers.iter_mut().zip(&after) {
                peer.current = *current;
            }
            return Some(Arc::clone(&peers[chosen].backend));
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

/// What a pick saw, for an explanation ([`Pool::pick_explained`]). One trace may serve the
/// several picks of a retried request: the scores are those of the last pick, the refusals those
/// of all.
#[derive(Debug, Default)]
pub struct PickTrace {
    /// Every backend, in pool order, in the last step of the last pick.
    pub peers: Vec<TracedPeer>,
    /// The backends a step chose that the [`Availability`] refused, in order, with the reason it
    /// gave (if any).
    pub refused: Vec<(Arc<Backend>, Option<Unavailable>)>,
}

/// One backend in a [`PickTrace`]. Weights and scores are in units of
/// [`SCALE`](super::weights::SCALE), as the pool keeps them.
#[derive(Debug)]
pub struct TracedPeer {
    /// The backend.
    pub backend: Arc<Backend>,
    /// The weight the step used: its effective weight, or 0 when it was left out (already tried
    /// by this request, or refused by the availability).
    pub weight: u32,
    /// The score the step compared: `current + weight` (the worked example's "current" column).
    pub compared: i64,
    /// Its `current` after the pick: where the next pick starts.
    pub after: i64,
    /// Its effective weight and the factors that made it, as read during the pick.
    pub effective: (u32, Factors),
}

impl PickTrace {
    fn note_refused(&mut self, backend: &Arc<Backend>, availability: &dyn Availability) {
        let why = availability.why_not(backend);
        self.refused.push((Arc::clone(backend), why));
    }

    /// The scores of a pick's last step: `weighed` went into it, `after` came out.
    fn note_scores(&mut self, peers: &[Peer], weighed: &[(u32, i64)], after: &[(u32, i64)]) {
        self.peers = peers
            .iter()
            .zip(weighed.iter().zip(after))
            .map(|(peer, (&(weight, current), &(_, after)))| TracedPeer {
                backend: Arc::clone(&peer.backend),
                weight,
                compared: current + i64::from(weight),
                after,
                effective: peer.backend.effective(),
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

    /// The worked example of the module documentation, read from the traces of the picks.
    #[test]
    fn a_trace_shows_the_worked_example() {
        let p = pool(&[5, 1, 1]);
        let table: Vec<(char, [i64; 3], [i64; 3])> = (0..7)
            .map(|_| {
                let mut trace = PickTrace::default();
                let chosen = p.pick_explained(&AlwaysAvailable, &[], &mut trace).unwrap();
                let units = |f: fn(&TracedPeer) -> i64| {
                    let v: Vec<i64> = trace.peers.iter().map(|t| f(t) / 100).collect();
                    [v[0], v[1], v[2]]
                };
                let name = (b'a' + chosen.id as u8) as char;
                (name, units(|t| t.compared), units(|t| t.after))
            })
            .collect();
        let expected = [
            ('a', [5, 1, 1], [-2, 1, 1]),
            ('a', [3, 2, 2], [-4, 2, 2]),
            ('b', [1, 3, 3], [1, -4, 3]),
            ('a', [6, -3, 4], [-1, -3, 4]),
            ('c', [4, -2, 5], [4, -2, -2]),
            ('a', [9, -1, -1], [2, -1, -1]),
            ('a', [7, 0, 0], [0, 0, 0]),
        ];
        assert_eq!(table, expected);
    }

    #[test]
    fn a_trace_names_what_was_refused_and_leaves_it_out() {
        let p = pool(&[5, 1, 1]);
        let mut trace = PickTrace::default();
        let chosen = p.pick_explained(&Only(1), &[], &mut trace).unwrap();
        assert_eq!(chosen.id, 1);
        let refused: Vec<u64> = trace.refused.iter().map(|(b, _)| b.id).collect();
        assert_eq!(
            refused,
            [0],
            "a won the step and was refused; b won the next"
        );
        assert_eq!(trace.refused[0].1, None, "Only gives no reason");
        let a = &trace.peers[0];
        assert_eq!((a.weight, a.compared, a.after), (0, 0, 0), "left alone");
        assert_eq!(trace.peers[1].compared, 100);
    }
}
