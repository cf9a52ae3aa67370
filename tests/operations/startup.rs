//! What the binary says at start-up: the dashboard's address (hiding the token), a warning when
//! no backend answers, and a warning when the built-in default backends are used.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::{self, wait_for_line, Backend, LbProcess, TempDir};

/// Starts the binary on a config file of `conf_text` with `extra` flags, at log level info;
/// returns it once it listens.
fn start(conf_text: &str, extra: &[&str]) -> LbProcess {
    LbProcess::with_config_file(conf_text, extra, "info")
}

#[test]
fn the_dashboard_address_is_logged_and_opens() {
    let a = Backend::answering("a");
    let conf = format!("health off\nbackend {}\n", a.url());
    let lb = start(&conf, &["--admin", "127.0.0.1:0"]);
    let line = lb.wait_log("dashboard: http://", 1);
    let url = line.split("dashboard: ").nth(1).unwrap().trim();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let r = support::get(addr, "/");
    assert_eq!(r.status, 200, "{url}");
    assert!(r.text().contains("<html"), "{url} is not the dashboard");
    assert!(!lb.stderr().contains("no backend answers"));
    drop(lb);
}

#[test]
fn with_a_token_the_dashboard_line_says_so_without_the_secret() {
    let a = Backend::answering("a");
    let conf = format!("health off\nbackend {}\n", a.url());
    let lb = start(
        &conf,
        &["--admin", "127.0.0.1:0", "--admin-token", "s3cret"],
    );
    let line = lb.wait_log("dashboard: http://", 1);
    assert!(line.contains("?token=..."), "{line}");
    assert!(!lb.stderr().contains("s3cret"));
    drop(lb);
}

#[test]
fn a_warning_names_the_backends_that_do_not_answer() {
    let a = Backend::answering("a");
    let dead = support::free_port();
    let conf = format!(
        "health off\nbackend {}\nbackend http://127.0.0.1:{dead}\n",
        a.url()
    );
    let lb = start(&conf, &[]);
    let line = lb.wait_log("not answering at start-up", 1);
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{dead}")), "{line}");
    assert!(!line.contains(&a.addr().to_string()), "{line}");
    drop(lb);

    let lb = start(
        &format!("health off\nbackend http://127.0.0.1:{dead}\n"),
        &[],
    );
    let line = lb.wait_log("no backend answers", 1);
    assert!(line.contains(&format!("127.0.0.1:{dead}")), "{line}");
    drop(lb);
}

#[test]
fn a_warning_says_when_the_built_in_default_backends_are_used() {
    // A config file without a backend line.
    let lb = start("health off\n", &[]);
    let line = lb.wait_log("built-in default backends", 1);
    assert!(
        line.contains("WARN") && line.contains("lists no backend"),
        "{line}"
    );
    assert!(line.contains("localhost:8081"), "{line}");
    drop(lb);

    // No config file at all (none in the working directory, no --config).
    let dir = TempDir::new("startup");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .args(["--listen", &listen, "--admin", "off"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let line = wait_for_line(&dir.path().join("stderr"), "using the built-in defaults", 1);
    assert!(line.contains("no config file"), "{line}");
    assert!(
        line.contains("localhost:8081, localhost:8082, localhost:8083"),
        "{line}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
