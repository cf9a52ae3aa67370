//! The balancer's binary as a child process, and what a test needs around processes: temporary
//! directories, free ports, the descriptor limit.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;

/// Raises this test process's descriptor limit to at least `needed` (up to the hard limit).
/// False, with a visible note on stderr, when the hard limit is lower: the caller skips.
pub fn allow_descriptors(needed: u64, test: &str) -> bool {
    let _ = loadbalancer::http::limits::raise_descriptor_limit();
    let have = loadbalancer::http::limits::descriptor_limit();
    if have >= needed {
        return true;
    }
    // Written past libtest's capture, so that a skip is never silent.
    let _ = writeln!(
        io::stderr(),
        "SKIPPED {test}: needs {needed} open descriptors, the hard limit is {have} (ulimit -Hn)"
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {needed} descriptors under CI, the limit is {have}"
    );
    false
}

/// A new empty directory under the system temp dir; removed by [`TempDir`]'s drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lbtest-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The built `loadbalancer` binary as a child process, on a free loopback port.
pub struct LbProcess {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

/// Where the child's stderr goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StderrTo {
    /// `dir/stderr`, for [`LbProcess::stderr`].
    File,
    /// A pipe the test holds open and never reads: once its buffer (64 KiB) is full, every
    /// write(2) to it blocks.
    UnreadPipe,
}

/// Starts the balancer binary in `dir` with `--config conf`, `--listen 127.0.0.1:PORT` on a free
/// port, `--admin off` and `extra` flags, stderr to `stderr`, and the child's descriptor limit
/// set to `nofile` (soft, hard) when given, as `ulimit -Sn` and `ulimit -Hn` would. Waits until
/// it accepts connections. A start that fails (most likely the port was taken between choosing
/// and binding it) is retried on another port, five times at most.
fn spawn_binary(
    dir: &Path,
    conf: &Path,
    extra: &[String],
    rust_log: &str,
    nofile: Option<(u64, u64)>,
    stderr: StderrTo,
) -> (Child, SocketAddr) {
    use std::os::unix::process::CommandExt;
    for attempt in 0.. {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stderr = match stderr {
            StderrTo::File => Stdio::from(std::fs::File::create(dir.join("stderr")).unwrap()),
            StderrTo::UnreadPipe => Stdio::piped(),
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_loadbalancer"));
        if let Some((soft, hard)) = nofile {
            // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .current_dir(dir)
            .arg("--config")
            .arg(conf)
            .args(["--listen", &addr.to_string(), "--admin", "off"])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn loadbalancer");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
                assert!(attempt < 5, "loadbalancer exited with {status}: {err}");
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return (child, addr);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("loadbalancer did not start listening on {addr}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    unreachable!()
}

impl LbProcess {
    /// Starts the binary with `--config` (a file with `config_lines` plus `health off`,
    /// `slow_start off`, `access_log off`), `--listen 127.0.0.1:PORT`, `--admin off` and one
    /// `--backend` per URL, in an empty working directory so no `./loadbalancer.conf` is read.
    /// Returns once it accepts connections.
    pub fn spawn(backends: &[String], config_lines: &[&str]) -> LbProcess {
        LbProcess::spawn_with(backends, config_lines, None)
    }

    /// [`LbProcess::spawn`] with the child's descriptor limit set to `nofile` (soft, hard).
    pub fn spawn_with(
        backends: &[String],
        config_lines: &[&str],
        nofile: Option<(u64, u64)>,
    ) -> LbProcess {
        LbProcess::start(backends, config_lines, nofile, false)
    }

    /// [`LbProcess::spawn`] with the access log on, at `RUST_LOG=info`: its lines are in
    /// [`LbProcess::stderr`].
    pub fn spawn_logging(backends: &[String], config_lines: &[&str]) -> LbProcess {
        LbProcess::start(backends, config_lines, None, true)
    }

    fn start(
        backends: &[String],
        config_lines: &[&str],
        nofile: Option<(u64, u64)>,
        access_log: bool,
    ) -> LbProcess {
        let log = if access_log { "on" } else { "off" };
        let mut text = format!("health off\nslow_start off\naccess_log {log}\n");
        for l in config_lines {
            text.push_str(l);
            text.push('\n');
        }
        let args: Vec<String> = backends
            .iter()
            .flat_map(|b| ["--backend".to_string(), b.clone()])
            .collect();
        let level = if access_log { "info" } else { "warn" };
        LbProcess::launch(&text, &args, level, nofile, StderrTo::File)
    }

    /// Starts the binary with `--config` on a file of exactly `text` ([`LbProcess::conf`], in an
    /// empty working directory), `--listen 127.0.0.1:PORT`, `--admin off` and `extra` flags, at
    /// `RUST_LOG=rust_log`. Returns once it accepts connections.
    pub fn with_config_file(text: &str, extra: &[&str], rust_log: &str) -> LbProcess {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        LbProcess::launch(text, &extra, rust_log, None, StderrTo::File)
    }

    /// [`LbProcess::with_config_file`] with stderr a pipe that this process holds open and never
    /// reads, as a stalled `docker logs` or journald would ([`LbProcess::stderr`] is then empty).
    pub fn with_unread_stderr(text: &str, extra: &[&str], rust_log: &str) -> LbProcess {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        LbProcess::launch(text, &extra, rust_log, None, StderrTo::UnreadPipe)
    }

    fn launch(
        text: &str,
        args: &[String],
        rust_log: &str,
        nofile: Option<(u64, u64)>,
        stderr: StderrTo,
    ) -> LbProcess {
        let dir = TempDir::new("bin");
        let conf = dir.path().join("test.conf");
        std::fs::write(&conf, text).unwrap();
        let (child, addr) = spawn_binary(dir.path(), &conf, args, rust_log, nofile, stderr);
        LbProcess { child, addr, dir }
    }

    /// The process's working directory (a [`TempDir`], removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the process was started with (`test.conf`).
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("test.conf")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `kB` field of /proc/PID/status, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident set size now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Descriptors the process has open now.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The process's descriptor limit `(soft, hard)`, from /proc/PID/limits.
    pub fn descriptor_limit(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files in /proc/PID/limits");
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    }

    /// Threads the process has now.
    pub fn threads(&self) -> usize {
        self.thread_names().len()
    }

    /// The names of the process's threads now.
    pub fn thread_names(&self) -> Vec<String> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect()
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "loadbalancer still running after {timeout:?}; stderr: {}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits until stderr contains `needle` `times` times; returns the first line with it.
    pub fn wait_log(&self, needle: &str, times: usize) -> String {
        wait_for_line(&self.dir.path().join("stderr"), needle, times)
    }

    /// Waits up to 10 s for an access-log line that contains every one of `parts`; returns it.
    pub fn access_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            let found = log
                .lines()
                .filter(|l| l.contains(" access: "))
                .find(|l| parts.iter().all(|p| l.contains(p)));
            if let Some(line) = found {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no access-log line with {parts:?} in:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary with `args` in `dir` to completion (killed after `timeout`); returns its exit
/// status, stdout and stderr.
pub fn run_binary(args: &[&str], dir: &Path, timeout: Duration) -> (ExitStatus, String, String) {
    let out_path = dir.join("run.stdout");
    let err_path = dir.join("run.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn loadbalancer");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadbalancer {args:?} still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        std::fs::read_to_string(out_path).unwrap(),
        std::fs::read_to_string(err_path).unwrap(),
    )
}

/// Waits up to 20 s until the file at `path` (a log as it grows) contains `needle` `times` times;
/// returns the first line with it.
pub fn wait_for_line(path: &Path, needle: &str, times: usize) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while read().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{times}) in {} after 20 s:\n{}",
            path.display(),
            read()
        );
        thread::sleep(Duration::from_millis(10));
    }
    read()
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .to_string()
}
