//! A demo server binary run on its own behaves like the ones `--demo` starts: it listens on
//! loopback, logs with timestamps (start, every `/control` change, stop), and stops on SIGINT
//! even when started the way a script starts a background job, with SIGINT ignored.
#![cfg(unix)] // signals and sh

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// The server binary with `--port 0`, started through `sh` with SIGINT ignored (what `server1 &`
/// in a non-interactive script does), with its stderr lines sent to the returned channel.
fn start_like_a_script() -> (Child, Receiver<String>) {
    let mut child = Command::new("sh")
        .args(["-c", "trap '' INT; exec \"$0\" --port 0"])
        .arg(env!("CARGO_BIN_EXE_server1"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server1 through sh");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The next stderr line containing `needle`, waiting up to [`T`].
fn next_line(lines: &Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no log line with {needle:?} ({e})"),
        }
    }
}

/// `2026-11-25T17:13:08.123Z INFO  servers: ...`: a UTC timestamp first, then the level.
fn assert_timestamped(line: &str) {
    let (time, rest) = line.split_once(' ').unwrap_or_default();
    assert!(
        time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "no timestamp: {line}"
    );
    assert!(rest.starts_with("INFO "), "{line}");
}

fn get(addr: SocketAddr, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

#[test]
fn logs_like_demo_mode_and_stops_on_sigint_even_when_a_script_ignores_it() {
    let (mut child, lines) = start_like_a_script();
    let started = next_line(&lines, "server1: listening on ");
    assert_timestamped(&started);
    let addr: SocketAddr = started
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{started}: {e}"));
    assert!(
        addr.ip().is_loopback(),
        "binds loopback by default: {started}"
    );

    let answer = get(addr, "/control?delay=20ms");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let changed = next_line(&lines, "/control");
    assert_timestamped(&changed);
    assert!(changed.contains(r#""delay_ms":20"#), "{changed}");

    kill(&child, "INT");
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server1 ignored SIGINT");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "exit status {status}");
    next_line(&lines, "SIGINT received, stopping");
}
