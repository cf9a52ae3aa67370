//! Connecting to Redis with every wait bounded, and telling what went wrong.
//!
//! The `redis` crate bounds the connection itself (TCP, `AUTH`, `SELECT`) by the timeout it is
//! given, and then *clears* the socket's read and write timeouts: a call on the connection it
//! returns would wait forever on a stopped server. So every connection gets its timeouts set
//! here, right after connecting, before its first command. The URL is never handed to the crate
//! as text: the connection settings are built from the parsed `shared` line, so no error of the
//! crate can repeat the password.

use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError};

use crate::config::shared::SharedConfig;

/// What went wrong talking to Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Redis refused the credentials (or wants some): a configuration error, not an outage.
    Auth(String),
    /// No answer in time.
    Timeout(String),
    /// Anything else: refused connection, reset, a server error.
    Other(String),
}

impl Problem {
    /// What went wrong, in words.
    pub fn text(&self) -> &str {
        match self {
            Problem::Auth(s) | Problem::Timeout(s) | Problem::Other(s) => s,
        }
    }
}

impl From<RedisError> for Problem {
    fn from(e: RedisError) -> Problem {
        let text = e.to_string();
        let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
            || text.contains("without any password configured");
        if auth {
            Problem::Auth(text)
        } else if e.is_timeout() {
            Problem::Timeout("no answer in time".into())
        } else {
            Problem::Other(text)
        }
    }
}

/// Where Redis is and how long a call may take.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    info: ConnectionInfo,
    /// The URL, the password hidden: for log lines.
    pub name: String,
    /// `timeout=`: every call.
    pub timeout: Duration,
    /// `connect_timeout=`: a connection, and the calls made while setting one up.
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// The endpoint of a `shared` line.
    pub(crate) fn new(config: &SharedConfig) -> Endpoint {
        let mut redis = RedisConnectionInfo::default()
            .set_db(i64::from(config.db))
            .set_skip_set_lib_name();
        if let Some(user) = &config.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &config.password {
            redis = redis.set_password(password);
        }
        // No Nagle: a pipeline is one write, and its answer is waited for at once.
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let info = ConnectionAddr::Tcp(config.host.clone(), config.port)
            .into_connection_info()
            .expect("a TCP address is always valid connection info")
            .set_tcp_settings(tcp)
            .set_redis_settings(redis);
        Endpoint {
            info,
            name: config.redacted_url(),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
        }
    }

    /// A new connection, its timeouts set: `connect_timeout` for now (the caller may run its
    /// setup calls), see [`Endpoint::for_calls`].
    pub(crate) fn connect(&self) -> Result<redis::Connection, Problem> {
        let client = redis::Client::open(self.info.clone())?;
        let con = client.get_connection_with_timeout(self.connect_timeout)?;
        // The crate has just cleared the timeouts it used while connecting.
        con.set_read_timeout(Some(self.connect_timeout))?;
        con.set_write_timeout(Some(self.connect_timeout))?;
        Ok(con)
    }

    /// Sets the timeouts of `con` for the calls requests wait on: `timeout=`.
    pub(crate) fn for_calls(&self, con: &redis::Connection) -> Result<(), Problem> {
        con.set_read_timeout(Some(self.timeout))?;
        con.set_write_timeout(Some(self.timeout))?;
        Ok(())
    }
}

/// Connects to the Redis of `config` and sends `PING`: how long the round trip took, or what
/// went wrong. For `--check` and the start-up check; at most about two `connect_timeout`s.
pub fn probe(config: &SharedConfig) -> Result<Duration, Problem> {
    let endpoint = Endpoint::new(config);
    let mut con = endpoint.connect()?;
    let started = Instant::now();
    redis::cmd("PING").query::<String>(&mut con)?;
    Ok(started.elapsed())
}
