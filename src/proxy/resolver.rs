//! Backend name resolution with a short cache.
//!
//! ureq resolves the backend's host on every request, and with a timeout set it does so on a
//! freshly spawned thread. Profiling showed that lookup and thread as a large share of the time
//! per proxied request, so answers are kept for [`TTL`]: like nginx and HAProxy without a
//! `resolver` section, the balancer then talks to the addresses it found, and a change in DNS is
//! picked up within the TTL. A name that does not resolve is [`ureq::Error::HostNotFound`],
//! whatever the system said, so that the client gets "backend host name does not resolve".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a resolved address list is reused. Default 30 s.
pub const TTL: Duration = Duration::from_secs(30);

/// A ureq [`Resolver`] that caches the default resolver's answers for [`TTL`]. Clones share
/// the cache (every worker's agents use one).
#[derive(Debug, Default, Clone)]
pub struct CachingResolver {
    inner: Arc<DefaultResolver>,
    /// Read by every request, written once per TTL: a read-write lock keeps workers from
    /// queueing behind each other here.
    cache: Arc<RwLock<HashMap<String, (Instant, ResolvedSocketAddrs)>>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = uri.authority().map_or("", |a| a.as_str());
        if let Some((at, addrs)) = self.cache.read().get(key) {
            if at.elapsed() < TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self
            .inner
            .resolve(uri, config, timeout)
            .map_err(|e| match e {
                // The default resolver passes the system's lookup failure on as an I/O error,
                // which would read as a failed connection that may have carried the request.
                // It means the name does not resolve, and nothing was sent: say so.
                ureq::Error::Io(e) => {
                    log::debug!("resolving {key}: {e}");
                    ureq::Error::HostNotFound
                }
                e => e,
            })?;
        self.cache
            .write()
            .insert(key.to_string(), (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}
