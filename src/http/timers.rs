//! The poller's timers: one pending check per connection, kept in a heap ordered by time, so that
//! the poller sleeps exactly until the next thing that can expire, and a connection's timeout
//! fires at its deadline rather than at the next pass of a periodic scan.
//!
//! A connection's real deadline depends on its state (a head started: `timeouts head=`; idle:
//! `timeouts client=`; lingering: [`LINGER`](super::LINGER) ...) and changes with every byte it
//! sends. Rather than move its heap entry each time, the poller keeps one *check* per connection
//! that is never later than its real deadline. When the check comes due, the poller looks at the
//! connection: expired, it acts; not yet, it schedules the next check at the real deadline. A
//! state whose deadline is earlier than the pending check schedules an earlier one; the later
//! entry stays in the heap and is skipped when it comes due (it is *stale*).
//!
//! Worked example, `timeouts client=60s head=10s`: a connection accepted at t=0 is checked at
//! 60 s. At t=1 s half a head arrives: the head's deadline, 11 s, is earlier, so a check is
//! scheduled at 11 s (the entry at 60 s is now stale). The head completes at t=2 s and the
//! answer goes out; at 11 s the check finds the connection idle since 2 s: its deadline is 62 s,
//! scheduled. At 60 s the stale entry is popped and skipped; at 62 s the connection is closed.
//!
//! Cost: a heap push only when a deadline moves earlier, so a keep-alive connection that sends
//! request after request costs no timer work per request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The pending checks (see the module documentation). Slots are identified by their index and
/// a generation, bumped when the slot is reused, so that a check of a closed connection never
/// touches the next one in its slot.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

/// What a slot keeps of its timer.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Check {
    /// The slot's generation.
    pub generation: u32,
    /// When its pending check is due, if one is.
    pub at: Option<Instant>,
}

impl Check {
    /// Forgets the pending check and bumps the generation: the slot is free for another
    /// connection.
    pub fn reset(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.at = None;
    }
}

impl Timers {
    /// Makes sure slot `idx`, whose timer is `check`, is checked no later than `at`.
    pub fn schedule(&mut self, idx: usize, check: &mut Check, at: Instant) {
        if check.at.is_some_and(|pending| pending <= at) {
            return;
        }
        check.at = Some(at);
        self.heap.push(Reverse((at, idx, check.generation)));
    }

    /// When the earliest entry is due (it may be stale: popping it is then a no-op).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops the next entry due by `now`: `(index, generation, due)`. The caller tells whether
    /// it is still the slot's pending check ([`Timers::is_current`]).
    pub fn pop(&mut self, now: Instant) -> Option<(usize, u32, Instant)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((at, idx, generation)) = self.heap.pop()?;
                Some((idx, generation, at))
            }
            _ => None,
        }
    }

    /// Entries in the heap, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

/// True when a popped entry `(generation, due)` is the pending check `check`; it is then
/// marked done.
pub(super) fn is_current(check: &mut Check, generation: u32, due: Instant) -> bool {
    if check.generation != generation || check.at != Some(due) {
        return false;
    }
    check.at = None;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_worked_example() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut timers = Timers::default();
        let mut check = Check::default();
        timers.schedule(0, &mut check, s(60));
        timers.schedule(0, &mut check, s(11));
        timers.schedule(0, &mut check, s(30)); // later than pending: nothing pushed
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(s(11)));
        assert_eq!(timers.pop(s(10)), None, "nothing due yet");
        let (idx, generation, due) = timers.pop(s(11)).unwrap();
        assert_eq!((idx, due), (0, s(11)));
        assert!(is_current(&mut check, generation, due));
        // Idle since 2 s: the real deadline is 62 s.
        timers.schedule(0, &mut check, s(62));
        let (_, generation, due) = timers.pop(s(60)).unwrap();
        assert!(!is_current(&mut check, generation, due), "60 s is stale");
        assert_eq!(timers.pop(s(61)), None);
        let (_, generation, due) = timers.pop(s(62)).unwrap();
        assert!(is_current(&mut check, generation, due));
    }

    #[test]
    fn a_reused_slot_ignores_the_old_connections_checks() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut check = Check::default();
        timers.schedule(3, &mut check, t0);
        check.reset();
        timers.schedule(3, &mut check, t0);
        let (_, g1, d1) = timers.pop(t0).unwrap();
        let (_, g2, d2) = timers.pop(t0).unwrap();
        // One of the two is the new connection's check, the other the old one's.
        let current = [(g1, d1), (g2, d2)]
            .into_iter()
            .filter(|&(g, d)| is_current(&mut check, g, d))
            .count();
        assert_eq!(current, 1);
    }
}
