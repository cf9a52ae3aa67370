//! Backends and how one is chosen: the part of a load balancer that decides *where* a request
//! goes.
//!
//! The rest of the balancer asks this folder two questions: "which backend takes this request?"
//! (the proxy, through [`selection::Pool::pick`]) and "here is how that attempt went" (the proxy
//! again, through an [`Observer`]). The maintenance thread moves the state that time changes:
//! breakers that cool down, health checks, effective weights.
//!
//! # Reading order
//!
//! 1. [`selection`]: the pool and nginx's smooth weighted round-robin, one short function with a
//!    worked example. Start here: it is the whole answer to "which backend?" when all is well.
//! 2. [`backend`]: one backend: who it is, its configured and effective weight, its counters, and
//!    how the next three concepts change it together, under one lock.
//! 3. [`breaker`]: the circuit breaker, fed by live traffic: a backend that keeps failing gets no
//!    requests for a while.
//! 4. [`health`]: active health checks with rise/fall thresholds, and the probe that makes one.
//! 5. [`weights`]: the effective weight the round-robin uses: a slow or failing backend gets a
//!    smaller share, one that has just come back ramps up (slow start).
//! 6. [`resilience`]: the adapter that plugs the backends' state into the pool and the proxy
//!    through the two seams below.
//! 7. [`retry`]: the retry budget, which bounds how many failed attempts the proxy may retry: a
//!    share of the requests of the last 10 s, counted lock-free, with a worked example.
//!
//! # The seams
//!
//! Two traits connect choosing a backend to the code that uses the choice:
//!
//! - [`Availability`]: may this backend take a request now? The pool asks it during a pick.
//!   Default: [`AlwaysAvailable`].
//! - [`Observer`]: how did this attempt go? The proxy tells it once per attempt.
//!
//! [`resilience::Resilience`] implements both from each backend's health, breaker and weights. A
//! test, or a balancer without health checks, plugs in simpler ones. The traits live here, beside
//! what they describe, and not beside the pool or the proxy that call them: so the pool and the
//! proxy depend on this folder and never the other way round. Pingora's `pingora-load-balancing`
//! is built the same way: a small module per concept, traits at the seams.
//!
//! # Dependencies point down
//!
//! ```text
//! selection, resilience      the pool; the adapter (which also reads crate::clock)
//!         │
//!         ▼
//! Availability, Observer     the seams (this file)
//!         │
//!         ▼
//! backend                    one backend: identity, counters, its state under one lock
//!         │
//!         ▼
//! breaker, health, weights   pure state machines and formulas (+ crate::config)
//! retry                      stands alone (+ crate::clock)
//! ```
//!
//! Nothing here imports the proxy, the front end (`http/`), the server, the admin pages, the
//! filter or the maintenance thread: they all use this folder.

pub mod backend;
pub mod breaker;
pub mod health;
pub mod resilience;
pub mod retry;
pub mod selection;
pub mod weights;

use std::time::Duration;

use backend::Backend;

/// Decides whether a backend may take a request right now. The pool asks it during a pick, under
/// the pool's lock, so it must be cheap and must not take the pool's lock itself.
///
/// It is asked only about the backend that won the round-robin, so that what it reserves (a
/// half-open breaker's single trial slot) is reserved only by the backend that gets the request.
pub trait Availability: Send + Sync {
    /// True when `backend` may be picked. May reserve something (a half-open trial slot) when it
    /// says yes.
    fn admit(&self, backend: &Backend) -> bool;

    /// Gives back what [`Availability::admit`] reserved, for an attempt that ended with no
    /// outcome to record (nothing reached the backend). Default: nothing was reserved.
    fn release(&self, backend: &Backend) {
        let _ = backend;
    }

    /// Why `backend` was not admitted, for an explanation: asked only when one is being made,
    /// right after [`Availability::admit`] said no. Default: no reason known.
    fn why_not(&self, backend: &Backend) -> Option<backend::Unavailable> {
        let _ = backend;
        None
    }
}

/// Every backend is always available: the default for a balancer without health checks or
/// breakers, and for tests of the pool alone.
#[derive(Debug, Default)]
pub struct AlwaysAvailable;

impl Availability for AlwaysAvailable {
    fn admit(&self, _: &Backend) -> bool {
        true
    }
}

/// Learns how each attempt went: the seam where health, breaker and weights plug in. There is no
/// default: the balancer uses [`resilience::Resilience`].
pub trait Observer: Send + Sync {
    /// Called once per attempt, when the backend's answer head arrived or the attempt failed.
    /// `latency` is the time to the response head.
    fn record(&self, backend: &Backend, success: bool, latency: Duration);
}
