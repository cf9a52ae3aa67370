//! The command line: `--help`, `--version`, `--check`, config file errors with file:line, unknown
//! flags, TLS backends, `--backend URL weight=N`, `--admin-token`, and a port already taken.

use std::net::TcpListener;
use std::time::Duration;

use crate::support::{run_binary, TempDir};
use loadbalancer::Config;

const T: Duration = Duration::from_secs(20);

#[test]
fn help_exits_zero_and_lists_every_option_with_its_default() {
    let dir = TempDir::new("cli");
    let (status, stdout, stderr) = run_binary(&["--help"], dir.path(), T);
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    // Each option, and the default it documents (None: a switch without a value).
    let options: [(&str, Option<&str>); 14] = [
        ("--listen", Some("0.0.0.0:8080")),
        ("--backend", Some("http://localhost:8081")),
        ("--workers", Some("64")),
        ("--queue", Some("off")),
        ("--connect-timeout", Some("2s")),
        ("--response-timeout", Some("30s")),
        ("--access-log", Some("on")),
        ("--explain", Some("off")),
        ("--admin", Some("127.0.0.1:9090")),
        ("--config", Some("loadbalancer.conf")),
        ("--demo", None),
        ("--admin-token", Some("none")),
        ("--check", None),
        ("--version", None),
    ];
    for (flag, default) in options {
        // The option's own entry: its line and any continuation lines up to the next option.
        let start = stdout
            .lines()
            .position(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("--help does not list {flag}:\n{stdout}"));
        let entry: Vec<&str> = stdout
            .lines()
            .skip(start)
            .enumerate()
            .take_while(|(i, l)| {
                *i == 0 || !(l.trim_start().starts_with("--") || l.trim().is_empty())
            })
            .map(|(_, l)| l)
            .collect();
        let entry = entry.join("\n");
        if let Some(default) = default {
            assert!(
                entry.contains("default") && entry.contains(default),
                "--help entry for {flag} does not give its default {default:?}:\n{entry}"
            );
        }
    }
}

#[test]
fn config_file_error_names_file_and_line() {
    let dir = TempDir::new("cli");
    let file = dir.path().join("broken.conf");
    std::fs::write(
        &file,
        "# a comment\nlisten 127.0.0.1:0\nworkers zero\nbackend http://127.0.0.1:1\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (status, stdout, stderr) = run_binary(&["--config", path, "--admin", "off"], dir.path(), T);
    assert!(!status.success(), "exited {status} with a broken config");
    assert!(
        stderr.contains(&format!("{path}:3:")),
        "stderr does not name {path}:3:\n{stderr}"
    );
    assert!(
        stderr.contains("workers"),
        "stderr does not say what is wrong:\n{stderr}"
    );
    assert!(stdout.is_empty(), "stdout: {stdout}");
}

#[test]
fn unknown_flag_exits_non_zero_with_a_clear_message() {
    let dir = TempDir::new("cli");
    let (status, stdout, stderr) = run_binary(&["--frobnicate", "7"], dir.path(), T);
    assert!(!status.success(), "exited {status} for an unknown flag");
    assert!(
        stderr.contains("--frobnicate") && stderr.to_lowercase().contains("unknown"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("--help"),
        "the message should point to --help: {stderr}"
    );
    assert!(stdout.is_empty(), "stdout: {stdout}");
}

#[test]
fn a_flag_without_its_value_exits_non_zero() {
    let dir = TempDir::new("cli");
    let (status, _, stderr) = run_binary(&["--workers"], dir.path(), T);
    assert!(!status.success());
    assert!(stderr.contains("--workers"), "stderr: {stderr}");
}

#[test]
fn version_prints_the_package_version() {
    let dir = TempDir::new("cli");
    let (status, stdout, _) = run_binary(&["--version"], dir.path(), T);
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        stdout.trim(),
        format!("loadbalancer {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_prints_the_effective_configuration_and_binds_nothing() {
    let dir = TempDir::new("cli");
    // A port that is taken: --check must not try to bind it.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let file = dir.path().join("lb.conf");
    std::fs::write(
        &file,
        "workers 8\nretries 1 retry_timeouts=on\ndeny_path /.git\nbackend http://127.0.0.1:1\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let args = [
        "--check",
        "--config",
        path,
        "--listen",
        &listen,
        "--backend",
        "http://127.0.0.1:2",
        "weight=3",
        "--admin",
        "0.0.0.0:9999",
        "--admin-token",
        "s3cret",
    ];
    let (status, stdout, stderr) = run_binary(&args, dir.path(), T);
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("configuration ok"), "stderr: {stderr}");
    assert!(!stdout.contains("s3cret"), "the token is printed: {stdout}");
    // What it prints is the config grammar, and it is what the flags and file make.
    let printed = Config::parse(&stdout, "printed").expect("--check output parses");
    assert_eq!(printed.listen, listen);
    assert_eq!(printed.workers, 8);
    assert!(printed.retries.on_timeout);
    assert_eq!(printed.filter.deny_paths, ["/.git"]);
    assert_eq!(printed.backends.len(), 1, "--backend replaces the file's");
    assert_eq!(
        (printed.backends[0].url.as_str(), printed.backends[0].weight),
        ("http://127.0.0.1:2", 3)
    );
    assert_eq!(printed.admin.as_deref(), Some("0.0.0.0:9999"));
}

#[test]
fn check_with_a_broken_file_exits_2_naming_file_and_line() {
    let dir = TempDir::new("cli");
    let file = dir.path().join("lb.conf");
    std::fs::write(&file, "workers 4\nbackend https://api.example\n").unwrap();
    let path = file.to_str().unwrap();
    let (status, stdout, stderr) = run_binary(&["--check", "--config", path], dir.path(), T);
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(&format!("{path}:2:")), "stderr: {stderr}");
    assert!(
        stderr.contains("TLS backends are not supported") && stderr.contains("http://"),
        "stderr: {stderr}"
    );
    assert!(stdout.is_empty(), "stdout: {stdout}");
}

#[test]
fn a_taken_port_gets_a_hint_naming_the_flag_to_change() {
    let dir = TempDir::new("cli");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    for (flag, other) in [("--listen", "--admin"), ("--admin", "--listen")] {
        let args = [
            flag,
            busy.as_str(),
            other,
            "127.0.0.1:0",
            "--backend",
            "http://127.0.0.1:1",
        ];
        let (status, _, stderr) = run_binary(&args, dir.path(), T);
        assert_eq!(status.code(), Some(1), "{flag}: stderr: {stderr}");
        assert!(
            stderr.contains("address in use") && stderr.contains(&busy),
            "{flag}: stderr: {stderr}"
        );
        assert!(
            stderr.contains(&format!("choose another port with {flag} ADDR")),
            "{flag}: stderr: {stderr}"
        );
    }
}

/// docs/teach.conf, the configuration for learning, passes `--check` and keeps its short timers.
#[test]
fn the_teaching_config_passes_check() {
    let dir = TempDir::new("cli");
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/teach.conf");
    let (status, stdout, stderr) = run_binary(&["--check", "--config", conf], dir.path(), T);
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    for line in [
        "health        path=/health interval=500ms timeout=400ms rise=2 fall=2",
        "breaker       failures=3 cooldown=2s max_cooldown=10s",
        "slow_start    5s",
        "retries       2 ",
        "rate_limit rate=2/s burst=10 path=/api",
        "ban after=20 window=20s duration=20s",
        "backend       http://localhost:8083 weight=1",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}
