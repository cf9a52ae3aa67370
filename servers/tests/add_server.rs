//! Runs `add_server.sh` (repository root) in throwaway copies of the repository layout: a new server
//! is added exactly once and removed again, a half-undone one is completed (or removed) with only
//! the part that is missing (or left), and every refused request leaves the copy byte-for-byte
//! unchanged.
#![cfg(unix)] // the script is bash

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("servers/ sits in the repository root")
        .to_path_buf()
}

/// A temporary copy of what the script touches: itself, loadbalancer.conf and the server bins.
/// Removed on drop, so a failing test leaves nothing behind either.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(with_conf: bool) -> Sandbox {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "add_server_test_{}_{nanos}_{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let root = repo_root();
        let bins = dir.join("servers/src/bin");
        fs::create_dir_all(&bins).unwrap();
        // fs::copy keeps the permissions, so the copy stays executable.
        fs::copy(root.join("add_server.sh"), dir.join("add_server.sh")).unwrap();
        if with_conf {
            // Not the repository's file: that one may already list servers added by hand.
            fs::write(dir.join("loadbalancer.conf"), DEFAULT_CONF).unwrap();
        }
        for n in 1..=3 {
            let name = format!("server{n}.rs");
            fs::copy(root.join("servers/src/bin").join(&name), bins.join(&name)).unwrap();
        }
        Sandbox { dir }
    }

    /// Runs the script from another directory, which it must not depend on.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.dir.join("add_server.sh"))
            .args(args)
            .current_dir(std::env::temp_dir())
            .output()
            .expect("run add_server.sh")
    }

    /// Every file under the sandbox, by relative path, with its contents.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, files);
                } else {
                    let relative = path.strip_prefix(root).unwrap().to_path_buf();
                    files.insert(relative, fs::read(&path).unwrap());
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(&self.dir, &self.dir, &mut files);
        files
    }

    /// Runs the script with `args`, which must fail with exit status 1, a message on stderr
    /// that mentions `mentions`, and no file changed.
    fn refuses(&self, args: &[&str], mentions: &str) {
        let before = self.snapshot();
        let out = self.run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
        assert!(self.snapshot() == before, "{args:?} changed files");
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.dir.join(path)).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The shipped loadbalancer.conf, which is also the template the script writes when the file is missing.
const DEFAULT_CONF: &str = "\
# loadbalancer configuration: one setting per line, '#' starts a comment.
# Every key is documented in docs/CONFIGURATION.md; flags given on the command line override this file.
listen     0.0.0.0:8080
admin      127.0.0.1:9090
workers    64
queue      1024
timeouts   connect=2s response=30s
access_log on

# Backends: ./add_server.sh appends new ones here.
backend    http://localhost:8081 weight=1
backend    http://localhost:8082 weight=1
backend    http://localhost:8083 weight=1
";

const SERVER4_LINE: &str = "backend    http://localhost:8084 weight=1";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn adds_a_server_once_and_refuses_bad_names_without_changing_anything() {
    let sandbox = Sandbox::new(true);

    let out = sandbox.run(&["server4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("cargo run -p servers --bin server4"),
        "{stdout}"
    );

    let bin = sandbox.read("servers/src/bin/server4.rs");
    assert!(
        bin.contains(r#"servers::main_for("server4", 8084)"#),
        "{bin}"
    );
    let conf = sandbox.read("loadbalancer.conf");
    assert_eq!(conf, format!("{DEFAULT_CONF}{SERVER4_LINE}\n"));
    assert_eq!(conf.matches(":8084").count(), 1);

    for (args, stderr_mentions) in [
        (&["server4"][..], "already exists"),
        (&["api4"][..], "8084"),
        (&["Server5"][..], "Server5"),
        (&["server0"][..], "server0"),
        (&["server05"][..], "server05"),
        (&["server99999"][..], "108079"),
        (&[][..], "Usage"),
        (&["server5", "server6"][..], "Usage"),
    ] {
        sandbox.refuses(args, stderr_mentions);
    }
}

#[test]
fn refuses_a_port_already_in_the_config() {
    let sandbox = Sandbox::new(true);
    let conf = sandbox.read("loadbalancer.conf");
    fs::write(
        sandbox.dir.join("loadbalancer.conf"),
        format!("{conf}backend    http://10.0.0.7:8085 weight=2\n"),
    )
    .unwrap();

    sandbox.refuses(&["server5"], "8085");
}

#[test]
fn creates_the_config_when_missing_and_keeps_a_last_line_without_newline() {
    let sandbox = Sandbox::new(false);
    let out = sandbox.run(&["server4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let conf = sandbox.read("loadbalancer.conf");
    assert_eq!(conf, format!("{DEFAULT_CONF}{SERVER4_LINE}\n"));

    fs::write(sandbox.dir.join("loadbalancer.conf"), "listen 0.0.0.0:8080").unwrap();
    let out = sandbox.run(&["api12"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        sandbox.read("loadbalancer.conf"),
        "listen 0.0.0.0:8080\nbackend    http://localhost:8092 weight=1\n"
    );
}

#[test]
fn help_goes_to_stdout() {
    let sandbox = Sandbox::new(true);
    let before = sandbox.snapshot();
    let out = sandbox.run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Usage"));
    assert!(sandbox.snapshot() == before);
}

const SERVER4_BIN: &str = "servers/src/bin/server4.rs";

fn write(sandbox: &Sandbox, path: &str, text: &str) {
    fs::write(sandbox.dir.join(path), text).unwrap();
}

/// Runs the script with `args`, which must succeed and say each of `lines` on stdout.
fn succeeds_saying(sandbox: &Sandbox, args: &[&str], lines: &[String]) {
    let out = sandbox.run(args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        text(&out.stderr)
    );
    for line in lines {
        assert!(
            stdout.contains(line.as_str()),
            "{args:?}: no {line:?} in {stdout}"
        );
    }
}

#[test]
fn removes_a_server_again_keeping_the_configs_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new(true);
    let original = sandbox.snapshot();
    let conf = sandbox.dir.join("loadbalancer.conf");
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o640)).unwrap();
    succeeds_saying(&sandbox, &["server4"], &[]);

    succeeds_saying(
        &sandbox,
        &["remove", "server4"],
        &[
            format!("deleted {SERVER4_BIN}"),
            format!("removed from loadbalancer.conf: {SERVER4_LINE}"),
        ],
    );
    assert!(sandbox.snapshot() == original, "not back to where it was");
    let mode = fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    // Nothing left to remove: refused, nothing changed.
    sandbox.refuses(&["remove", "server4"], "nothing to remove");
}

#[test]
fn a_rerun_after_a_manual_revert_does_only_what_is_missing() {
    let sandbox = Sandbox::new(true);
    succeeds_saying(&sandbox, &["server4"], &[]);
    let added = sandbox.snapshot();
    let add = ["server4"];
    let remove = ["remove", "server4"];

    // The config line undone by hand: adding again appends only the line.
    write(&sandbox, "loadbalancer.conf", DEFAULT_CONF);
    let kept_bin = format!("kept {SERVER4_BIN}");
    let appended = format!("appended to loadbalancer.conf: {SERVER4_LINE}");
    succeeds_saying(&sandbox, &add, &[kept_bin, appended]);
    assert!(sandbox.snapshot() == added);

    // The bin deleted by hand: adding again writes only the bin.
    fs::remove_file(sandbox.dir.join(SERVER4_BIN)).unwrap();
    let kept_line = "kept the backend line already in loadbalancer.conf".to_string();
    succeeds_saying(
        &sandbox,
        &add,
        &[format!("created {SERVER4_BIN}"), kept_line],
    );
    assert!(sandbox.snapshot() == added);

    // Removing what is left after the bin was deleted by hand: the line only.
    fs::remove_file(sandbox.dir.join(SERVER4_BIN)).unwrap();
    succeeds_saying(
        &sandbox,
        &remove,
        &[format!("{SERVER4_BIN} was already gone")],
    );
    assert_eq!(sandbox.read("loadbalancer.conf"), DEFAULT_CONF);

    // And the bin after the line was deleted by hand.
    succeeds_saying(&sandbox, &add, &[]);
    write(&sandbox, "loadbalancer.conf", DEFAULT_CONF);
    let no_line = "no backend line for port 8084".to_string();
    succeeds_saying(&sandbox, &remove, &[no_line]);
    assert!(!sandbox.dir.join(SERVER4_BIN).exists());
}

#[test]
fn refuses_to_remove_what_it_did_not_write() {
    let sandbox = Sandbox::new(true);
    write(
        &sandbox,
        "servers/src/bin/server5.rs",
        "fn main() { println!(\"my own server\") }\n",
    );
    let conf = sandbox.read("loadbalancer.conf");
    write(
        &sandbox,
        "loadbalancer.conf",
        &format!("{conf}backend    http://10.0.0.7:8086 weight=2\n"),
    );
    for (args, stderr_mentions) in [
        (&["remove"][..], "remove needs"),
        (&["remove", "Server4"][..], "Server4"),
        (&["remove", "server5"][..], "changed by hand"),
        // Another machine's backend on 8086 is not server6's line.
        (&["remove", "server6"][..], "nothing to remove"),
        (&["remove", "server4", "server5"][..], "Usage"),
    ] {
        sandbox.refuses(args, stderr_mentions);
    }
}
