//! The poller's `epoll`: the `polling` crate registers and re-arms the sockets (`add`, `modify`,
//! `delete`, through [`Deref`]), and the poller waits with one `epoll_wait(2)` on the same
//! descriptor. Another thread wakes it with one write to an `eventfd` ([`Epoll::notify`]).
//!
//! Why not `polling`'s own `wait` and `notify`: its `wait` arms a `timerfd` for the timeout and
//! re-registers it, then reads its own notifier and re-registers that, every time: five system
//! calls where one does. Under `wrk -c50` the poller waits about once every four requests, so
//! that was about one system call per request of the seven a request needs (measured with
//! `perf stat -e syscalls:sys_enter_*`; docs/PERFORMANCE.md). The price: `epoll_wait` counts
//! its timeout in milliseconds, so a deadline is met up to a millisecond late, never early.

use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use polling::{Event, PollMode, Poller};

/// The key of the wake-up `eventfd` (`polling` keeps `usize::MAX` for its own notifier).
const WAKE: u64 = u64::MAX - 1;

/// Events taken from the kernel per wait. 1024, as `polling`'s own default.
const CAPACITY: usize = 1024;

/// What one wait found: the keys of the ready sockets. Made once and reused.
pub(crate) struct Ready {
    events: Box<[libc::epoll_event]>,
    /// The keys of the sockets ready, in the kernel's order.
    pub keys: Vec<usize>,
}

impl Default for Ready {
    fn default() -> Ready {
        Ready {
            events: vec![libc::epoll_event { events: 0, u64: 0 }; CAPACITY].into_boxed_slice(),
            keys: Vec::with_capacity(CAPACITY),
        }
    }
}

/// An `epoll` instance that `polling` registers sockets with and the poller waits on (see the
/// module documentation).
pub(crate) struct Epoll {
    poller: Poller,
    wake: OwnedFd,
}

impl Deref for Epoll {
    type Target = Poller;

    fn deref(&self) -> &Poller {
        &self.poller
    }
}

impl Epoll {
    /// A new instance with its wake-up `eventfd` registered (level-triggered: it stays ready
    /// until the poller reads it).
    pub fn new() -> io::Result<Epoll> {
        let poller = Poller::new()?;
        // SAFETY: eventfd(2) with valid flags; the descriptor it returns is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `wake` lives as long as the poller, which never outlives this struct.
        unsafe { poller.add_with_mode(&wake, Event::readable(WAKE as usize), PollMode::Level)? };
        Ok(Epoll { poller, wake })
    }

    /// Wakes the thread waiting in [`Epoll::wait`] (or makes its next wait return at once).
    pub fn notify(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) of 8 bytes from `one` to the eventfd this struct owns.
        let n = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        // EAGAIN: the counter is full, so the poller is woken anyway.
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (for ever with `None`) for events, and puts the keys of the ready
    /// sockets in `ready`. A wake-up by [`Epoll::notify`] returns with no key.
    pub fn wait(&self, ready: &mut Ready, timeout: Option<Duration>) -> io::Result<()> {
        ready.keys.clear();
        let ms = timeout.map_or(-1, |t| {
            // Rounded up: a deadline a few microseconds away must not become a busy loop.
            let ms = t.as_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u128) as libc::c_int
        });
        let events = &mut ready.events;
        // SAFETY: epoll_wait(2) on the descriptor `polling` owns, into `events`, whose length
        // is given.
        let n = unsafe {
            libc::epoll_wait(
                self.poller.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in &events[..n as usize] {
            // Copied out: the struct is packed on x86-64.
            let key = ev.u64;
            match key {
                WAKE => self.clear_wake(),
                key if key == u64::MAX => {} // `polling`'s notifier: never used here
                key => ready.keys.push(key as usize),
            }
        }
        Ok(())
    }

    fn clear_wake(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: read(2) of up to 8 bytes into `buf` from the eventfd this struct owns.
        unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn waits_for_a_socket_a_timeout_or_a_wake_up() {
        let epoll = Arc::new(Epoll::new().unwrap());
        let mut ready = Ready::default();
        let started = Instant::now();
        epoll
            .wait(&mut ready, Some(Duration::from_millis(20)))
            .unwrap();
        assert!(ready.keys.is_empty() && started.elapsed() >= Duration::from_millis(20));

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: deleted below, before the listener is dropped.
        unsafe { epoll.add(&listener, Event::readable(7)).unwrap() };
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        epoll
            .wait(&mut ready, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(ready.keys, [7]);
        epoll.delete(&listener).unwrap();

        let waker = Arc::clone(&epoll);
        let t = std::thread::spawn(move || waker.notify().unwrap());
        epoll.wait(&mut ready, None).unwrap();
        assert!(ready.keys.is_empty(), "woken, no socket ready");
        t.join().unwrap();
        // The wake-up was read: the next wait times out.
        epoll
            .wait(&mut ready, Some(Duration::from_millis(1)))
            .unwrap();
        assert!(ready.keys.is_empty());
    }
}
