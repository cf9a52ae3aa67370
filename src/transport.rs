//! The transport to backends: ureq's own TCP transport, minus system calls that do nothing for a
//! proxy.
//!
//! **Probing.** ureq probes a connection (non-blocking mode on, a one-byte read, blocking mode off: three
//! system calls) twice per request: when the connection goes back to the pool right after a
//! response, and again when it is taken out for the next request. Only the second probe can
//! catch what matters, a backend that closed an idle connection or sent bytes nobody asked for
//! (both would have to happen after the response, before the next request), so
//! [`LeanTransport`] skips the first. Profiling (wrk -c50, 3 nginx backends) showed the probes at
//! about 3 of the 9 system calls each proxied request makes to its backend.
//!
//! **Socket timeouts.** ureq sets a socket's read timeout to the time left until the request's
//! deadline, so the value differs on every read and costs a `setsockopt` each time. Rounding the
//! time left up to [`TIMEOUT_GRANULARITY`] makes consecutive values equal, and ureq skips the
//! call when the value has not changed. A timeout then fires at most 10 ms late.

use std::fmt;

use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, Transport,
};

/// Socket timeouts are rounded up to a multiple of this. 10 ms.
pub const TIMEOUT_GRANULARITY: std::time::Duration = std::time::Duration::from_millis(10);

fn coarse(mut timeout: NextTimeout) -> NextTimeout {
    if let UreqDuration::Exact(d) = timeout.after {
        let step = TIMEOUT_GRANULARITY.as_nanos();
        let rounded = d.as_nanos().div_ceil(step) * step;
        timeout.after = UreqDuration::Exact(std::time::Duration::from_nanos(
            rounded.min(u64::MAX as u128) as u64,
        ));
    }
    timeout
}

/// ureq's default connector, making [`LeanTransport`]s.
#[derive(Debug, Default)]
pub struct LeanConnector(DefaultConnector);

impl Connector<()> for LeanConnector {
    type Out = LeanTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(self
            .0
            .connect(details, chained)?
            .map(|inner| LeanTransport { inner, used: false }))
    }
}

/// ureq's transport, with coarse socket timeouts, whose first liveness probe after any I/O is
/// answered "open" without probing: that call is the pool's check on return, made right after the
/// response was read.
pub struct LeanTransport {
    inner: Box<dyn Transport>,
    used: bool,
}

impl fmt::Debug for LeanTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeanTransport")
            .field("inner", &self.inner)
            .finish()
    }
}

impl Transport for LeanTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.used = true;
        self.inner.transmit_output(amount, coarse(timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.used = true;
        self.inner.await_input(coarse(timeout))
    }

    fn is_open(&mut self) -> bool {
        if std::mem::take(&mut self.used) {
            return true;
        }
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_to_the_granularity() {
        let t = |ms: u64, us: u64| NextTimeout {
            after: UreqDuration::Exact(Duration::from_millis(ms) + Duration::from_micros(us)),
            reason: ureq::Timeout::RecvResponse,
            per_read: None,
            per_write: None,
        };
        let after = |n: NextTimeout| match coarse(n).after {
            UreqDuration::Exact(d) => d,
            UreqDuration::NotHappening => unreachable!(),
        };
        assert_eq!(after(t(29_999, 1)), Duration::from_secs(30));
        assert_eq!(after(t(29_990, 900)), Duration::from_secs(30));
        assert_eq!(after(t(300, 0)), Duration::from_millis(300));
        assert_eq!(after(t(0, 1)), Duration::from_millis(10));
    }
}
