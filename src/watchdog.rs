//! The watchdog for tiny_http's connection thread pool (see [`run`]).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::sockets;

/// How often the watchdog looks for connections nobody reads. 100 ms.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(100);

/// Most kicks the watchdog makes in one round. Each one hands a connection waiting for a thread
/// to a new one.
const WATCHDOG_MAX_KICKS: usize = 256;

/// Runs until `stopping`. Connects at least every `keep_accepting` (see
/// `sockets::set_client_options`), and works around a race in tiny_http 0.12's connection thread
/// pool.
///
/// tiny_http gives every client connection a thread from a pool. When several connections arrive
/// at once, the pool can count a thread as idle that it has already woken for an earlier
/// connection, and queue the new connection instead of starting a thread for it. Since a
/// keep-alive connection holds its thread until the client closes it, the queued connection may
/// then wait indefinitely: with a fresh pool of 4 threads, a burst of 40 clients left 36 waiting.
///
/// The watchdog finds such connections from outside: every 100 ms it lists the connections to
/// our port that have unread bytes in the kernel ([`sockets::unread_connections`]); one that
/// still has them on the next look is not being read. For each, it opens and at once closes a
/// connection of its own: tiny_http then sees no idle thread, starts one for that connection, and
/// after its quick end the new thread takes the oldest waiting connection. A connection that is
/// merely slow to be read (a large upload under backpressure) costs at most an idle thread.
pub fn run(target: SocketAddr, keep_accepting: Duration, stopping: Arc<AtomicBool>) {
    let mut previous: HashSet<SocketAddr> = HashSet::new();
    let mut last_kick = Instant::now();
    while !stopping.load(SeqCst) {
        thread::sleep(WATCHDOG_INTERVAL);
        if last_kick.elapsed() >= keep_accepting {
            // The listener's client timeout also applies to accept(): keep it from expiring.
            let _ = TcpStream::connect_timeout(&target, Duration::from_millis(200));
            last_kick = Instant::now();
        }
        let current = sockets::unread_connections(target.port());
        let stuck = current.intersection(&previous).count();
        previous = current;
        if stuck == 0 {
            continue;
        }
        let kicks = stuck.min(WATCHDOG_MAX_KICKS);
        last_kick = Instant::now();
        log::debug!(
            "{stuck} client connections are not being read: kicking tiny_http {kicks} times"
        );
        for _ in 0..kicks {
            match TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                Ok(s) => drop(s),
                Err(e) => {
                    log::debug!("watchdog cannot connect to {target}: {e}");
                    break;
                }
            }
        }
    }
}
