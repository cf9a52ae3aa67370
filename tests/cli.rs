//! The command line: `--help`, config file errors with file:line, unknown flags.

mod common;

use std::time::Duration;

use common::{run_binary, TempDir};

const T: Duration = Duration::from_secs(20);

#[test]
fn help_exits_zero_and_lists_every_option_with_its_default() {
    let dir = TempDir::new("cli");
    let (status, stdout, stderr) = run_binary(&["--help"], dir.path(), T);
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    // Each option, and the default it documents (None: a switch without a value).
    let options: [(&str, Option<&str>); 10] = [
        ("--listen", Some("0.0.0.0:8080")),
        ("--backend", Some("http://localhost:8081")),
        ("--workers", Some("64")),
        ("--queue", Some("off")),
        ("--connect-timeout", Some("2s")),
        ("--response-timeout", Some("30s")),
        ("--access-log", Some("on")),
        ("--admin", Some("127.0.0.1:9090")),
        ("--config", Some("loadbalancer.conf")),
        ("--demo", None),
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
