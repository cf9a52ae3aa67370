//! A real `redis-server` (the Debian package) for the shared-limit tests: started on a free
//! loopback port with `--save '' --appendonly no` (nothing on disk), stopped by its PID.
//!
//! Where `redis-server` is not installed the tests that need it say so on stderr and return
//! (skipped), except under CI (`CI=true` or `CI=1`), where a missing server fails them.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{free_port, TempDir};

/// The `redis-server` binary, if installed.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// True under CI (`CI=true`, as CI sets it, or `CI=1`).
fn under_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// A running `redis-server`; killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    dir: TempDir,
}

impl Redis {
    /// Starts `redis-server` with `extra` arguments (e.g. `["--requirepass", "pw"]`), or returns
    /// `None` after saying `SKIPPED test` when it is not installed (a failure under CI).
    pub fn start(test: &str, extra: &[&str]) -> Option<Redis> {
        if binary().is_none() {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: redis-server is not installed (apt-get install redis-server)"
            );
            assert!(!under_ci(), "{test}: redis-server is missing under CI");
            return None;
        }
        let mut redis = Redis {
            child: None,
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: TempDir::new("redis"),
        };
        redis.port = redis.spawn_on_free_port();
        Some(redis)
    }

    fn spawn_on_free_port(&mut self) -> u16 {
        for _ in 0..5 {
            let port = free_port();
            if self.spawn(port) {
                return port;
            }
        }
        panic!("redis-server did not start: {}", self.log());
    }

    /// Starts the server on `port`; false when it exited (the port was taken).
    fn spawn(&mut self, port: u16) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new(binary().unwrap())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not listen on {port}: {}", self.log());
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// `redis://127.0.0.1:PORT/0`, with `:password@` when given.
    pub fn url(&self, password: Option<&str>) -> String {
        let auth = password.map_or(String::new(), |p| format!(":{p}@"));
        format!("redis://{auth}127.0.0.1:{}/0", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server runs").id()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} redis-server");
    }

    /// SIGSTOP: the server holds its connections and answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the server (SIGKILL) and waits for it: every connection is reset, its data lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(self.port), "restart: {}", self.log());
    }

    /// A connection of the test's own (the `redis` crate, as the balancer uses it).
    pub fn connection(&self, password: Option<&str>) -> redis::Connection {
        let client = redis::Client::open(self.url(password)).unwrap();
        let con = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap();
        con.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        con
    }

    /// Runs one command (words) on a connection of its own.
    pub fn command<T: redis::FromRedisValue>(&self, words: &[&str]) -> T {
        let mut cmd = redis::cmd(words[0]);
        for w in &words[1..] {
            cmd.arg(*w);
        }
        cmd.query(&mut self.connection(None))
            .unwrap_or_else(|e| panic!("{words:?}: {e}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process dies of SIGKILL too, but continue it first to be tidy.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.pid().to_string())
                .status();
        }
        self.kill();
    }
}
