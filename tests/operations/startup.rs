//! What the binary says at start-up: the dashboard's address (hiding the token), a warning when
//! no backend answers, and a warning when the built-in default backends are used.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{self, spawn_binary, wait_until, Backend, TempDir};

const T: Duration = Duration::from_secs(20);

fn stderr_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
}

/// Waits until the process's stderr (in `dir`) has a line containing `needle`; returns it.
fn line_with(dir: &Path, needle: &str) -> String {
    wait_until(&format!("a log line with {needle:?}"), T, || {
        stderr_of(dir).contains(needle)
    });
    let all = stderr_of(dir);
    all.lines()
        .find(|l| l.contains(needle))
        .unwrap()
        .to_string()
}

/// Kills and reaps a child started by a test.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the binary with `conf` and `extra` flags at log level info; returns it once it listens.
fn start(dir: &TempDir, conf_text: &str, extra: &[&str]) -> Child {
    let conf = dir.path().join("lb.conf");
    std::fs::write(&conf, conf_text).unwrap();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    spawn_binary(dir.path(), &conf, &extra, "info").0
}

#[test]
fn the_dashboard_address_is_logged_and_opens() {
    let a = Backend::answering("a");
    let dir = TempDir::new("startup");
    let conf = format!("health off\nbackend {}\n", a.url());
    let child = start(&dir, &conf, &["--admin", "127.0.0.1:0"]);
    let line = line_with(dir.path(), "dashboard: http://");
    let url = line.split("dashboard: ").nth(1).unwrap().trim();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let r = support::get(addr, "/");
    assert_eq!(r.status, 200, "{url}");
    assert!(r.text().contains("<html"), "{url} is not the dashboard");
    assert!(!stderr_of(dir.path()).contains("no backend answers"));
    stop(child);
}

#[test]
fn with_a_token_the_dashboard_line_says_so_without_the_secret() {
    let a = Backend::answering("a");
    let dir = TempDir::new("startup");
    let conf = format!("health off\nbackend {}\n", a.url());
    let child = start(
        &dir,
        &conf,
        &["--admin", "127.0.0.1:0", "--admin-token", "s3cret"],
    );
    let line = line_with(dir.path(), "dashboard: http://");
    assert!(line.contains("?token=..."), "{line}");
    assert!(!stderr_of(dir.path()).contains("s3cret"));
    stop(child);
}

#[test]
fn a_warning_names_the_backends_that_do_not_answer() {
    let a = Backend::answering("a");
    let dead = support::free_port();
    let dir = TempDir::new("startup");
    let conf = format!(
        "health off\nbackend {}\nbackend http://127.0.0.1:{dead}\n",
        a.url()
    );
    let child = start(&dir, &conf, &[]);
    let line = line_with(dir.path(), "not answering at start-up");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{dead}")), "{line}");
    assert!(!line.contains(&a.addr().to_string()), "{line}");
    stop(child);

    let dir = TempDir::new("startup");
    let child = start(
        &dir,
        &format!("health off\nbackend http://127.0.0.1:{dead}\n"),
        &[],
    );
    let line = line_with(dir.path(), "no backend answers");
    assert!(line.contains(&format!("127.0.0.1:{dead}")), "{line}");
    stop(child);
}

#[test]
fn a_warning_says_when_the_built_in_default_backends_are_used() {
    // A config file without a backend line.
    let dir = TempDir::new("startup");
    let child = start(&dir, "health off\n", &[]);
    let line = line_with(dir.path(), "built-in default backends");
    assert!(
        line.contains("WARN") && line.contains("lists no backend"),
        "{line}"
    );
    assert!(line.contains("localhost:8081"), "{line}");
    stop(child);

    // No config file at all (none in the working directory, no --config).
    let dir = TempDir::new("startup");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .args(["--listen", &listen, "--admin", "off"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let line = line_with(dir.path(), "using the built-in defaults");
    assert!(line.contains("no config file"), "{line}");
    assert!(
        line.contains("localhost:8081, localhost:8082, localhost:8083"),
        "{line}"
    );
    stop(child);
}
