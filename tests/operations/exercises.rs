//! docs/EXERCISES.md, run as a learner runs it and checked against what each exercise predicts,
//! so that an exercise cannot drift from the balancer unnoticed. The test reads the file itself:
//!
//! - The ```` ```sh ```` block of the introduction with `cargo run --release -- ...`: how the
//!   balancer starts for every exercise (`--demo --config docs/teach.conf`).
//! - Each `## ` heading starts an exercise. Its ```` ```sh ```` blocks are numbered from 1 and
//!   run in order:
//!   - a line `cargo run --release -- ARGS` (the last line of its block) starts the balancer
//!     again, the running one stopped, with ARGS instead;
//!   - a block that starts with `while true` (a loop the learner leaves running in a terminal of
//!     its own) runs in the background until the checks are done;
//!   - every other line runs with bash, a block at a time, to its end. A block's output is what it
//!     wrote to stdout and stderr, in order.
//! - Under the exercise's *Expected*, a comment says what is checked, a check a line:
//!
//!   ```text
//!   <!-- check
//!   block 2 is REGEX              the block's whole output (trimmed) matches REGEX
//!   block 2 has REGEX             some of the block's output matches REGEX
//!   block 2 picks server1 server2 the backends its output names, in order: the `pick=` of
//!                                 explain headers, or the `Hello from serverN` of bodies
//!   log TEXT                      a line of the balancer's log contains TEXT, after the line
//!                                 that the check before it found
//!   log +2..4s TEXT               the same, 2 to 4 s after that line
//!   log matching REGEX            a line after that one matches REGEX
//!   unchecked: WHY                a part of the exercise that is not checked, and why
//!   -->
//!   ```
//!
//!   or `<!-- unchecked: WHY -->` alone: the exercise is not run. An exercise with neither fails
//!   the test.
//!
//! Each exercise runs on a balancer of its own, started fresh on free ports: in the commands, the
//! checks and a copy of docs/teach.conf, ports 8080 (the balancer), 8081..8083 (server1..3) and
//! 9090 (admin) become free ones. Commands run in a temporary folder that holds that copy as
//! `docs/teach.conf` and a link to `benches/`, so nothing in the repository changes.
//!
//! The exercises run at once, each on a thread of its own: they spend most of their time waiting
//! on the balancer's timers (the longest, the breaker's, takes about 30 s); one that runs a
//! benchmark script (`python3 benches/...`) runs alone. Their predictions hold on a quiet
//! machine: the weights follow latencies, and a build beside the test can make a demo server
//! slow for a moment. So an exercise whose check fails runs again, alone, on a fresh balancer,
//! three times at most; a prediction that is wrong fails every time.
//!
//! The commands need bash and curl (without curl the test is skipped, with a note, except under
//! CI); an exercise that needs python3 is skipped where there is none. `EXERCISE=4 cargo test
//! --test operations exercises -- --nocapture` runs exercise 4 alone and prints how it went.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::support::{free_port, TempDir};

/// Held to read by an exercise while it runs beside others, to write by one that runs alone: one
/// that loads the machine (a benchmark script, `python3 benches/...`), whose load would upset the
/// latencies that the others' predictions rest on, and one that runs again after a failure.
static LOAD: RwLock<()> = RwLock::new(());

/// Runs of one exercise before its failure counts.
const ATTEMPTS: usize = 3;

/// The longest a foreground block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a `log` check waits for its line, from the end of the blocks.
const LOG_WAIT: Duration = Duration::from_secs(30);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One exercise as the file has it.
#[derive(Clone, Debug)]
struct Exercise {
    title: String,
    /// The `sh` blocks, in order.
    blocks: Vec<String>,
    /// The lines of its `<!-- check ... -->` comment (`unchecked:` lines excluded).
    checks: Vec<String>,
    /// Why it, or a part of it, is not checked.
    unchecked: Vec<String>,
    /// Its comment says `<!-- unchecked: ... -->`: it is not run.
    skipped: bool,
}

/// The whole file: the default start command and the exercises.
#[derive(Debug)]
struct Exercises {
    start: String,
    list: Vec<Exercise>,
}

/// Reads EXERCISES.md as the module documentation says.
fn parse(text: &str) -> Result<Exercises, String> {
    let mut start = None;
    let mut list: Vec<Exercise> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let at = |what: &str| format!("EXERCISES.md:{}: {what}", n + 1);
        if let Some(title) = line.strip_prefix("## ") {
            list.push(Exercise {
                title: title.trim().to_string(),
                blocks: Vec::new(),
                checks: Vec::new(),
                unchecked: Vec::new(),
                skipped: false,
            });
        } else if line.starts_with("```") {
            let lang = line.trim_start_matches('`').trim();
            let mut body = Vec::new();
            for (_, l) in lines.by_ref() {
                if l.starts_with("```") {
                    break;
                }
                body.push(l);
            }
            if lang != "sh" {
                continue;
            }
            let body = body.join("\n");
            match list.last_mut() {
                Some(ex) => ex.blocks.push(body),
                None if body.contains("cargo run") && start.is_none() => start = Some(body),
                None => {}
            }
        } else if let Some(rest) = line.trim().strip_prefix("<!--") {
            let mut comment = rest.to_string();
            while !comment.contains("-->") {
                let (_, l) = lines.next().ok_or_else(|| at("a comment never closed"))?;
                comment.push('\n');
                comment.push_str(l);
            }
            let comment = comment.split("-->").next().unwrap_or_default().trim();
            let Some(ex) = list.last_mut() else { continue };
            if let Some(why) = comment.strip_prefix("unchecked:") {
                ex.skipped = true;
                ex.unchecked.push(why.trim().to_string());
            } else if let Some(checks) = comment.strip_prefix("check") {
                for check in checks.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    match check.strip_prefix("unchecked:") {
                        Some(why) => ex.unchecked.push(why.trim().to_string()),
                        None => ex.checks.push(check.to_string()),
                    }
                }
            }
        }
    }
    let start = start.ok_or("no ```sh block with `cargo run` before the first exercise")?;
    Ok(Exercises { start, list })
}

/// The five ports of one run, by the port the file names.
#[derive(Clone, Debug)]
struct Ports(BTreeMap<u16, u16>);

/// The ports the file names: the balancer, server1..3, admin.
const DOC_PORTS: [u16; 5] = [8080, 8081, 8082, 8083, 9090];

impl Ports {
    /// Free ports in place of the file's.
    fn free() -> Ports {
        Ports(DOC_PORTS.iter().map(|p| (*p, free_port())).collect())
    }

    /// The file's own ports (to read the checks before any run).
    fn as_written() -> Ports {
        Ports(DOC_PORTS.iter().map(|p| (*p, *p)).collect())
    }

    fn balancer(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.0[&8080]))
    }

    /// `text` with every `:PORT` of the file's replaced by this run's.
    fn rewrite(&self, text: &str) -> String {
        static PORT: OnceLock<Regex> = OnceLock::new();
        let port = PORT.get_or_init(|| Regex::new(r":(8080|8081|8082|8083|9090)\b").unwrap());
        port.replace_all(text, |c: &regex::Captures| {
            format!(":{}", self.0[&c[1].parse::<u16>().unwrap()])
        })
        .into_owned()
    }

    /// `serverN` for a demo server's port in this run (8081 is server1), as the bodies say.
    fn server(&self, port: u16) -> String {
        match self.0.iter().find(|(_, p)| **p == port) {
            Some((doc, _)) if (8081..=8083).contains(doc) => format!("server{}", doc - 8080),
            _ => format!("port {port}"),
        }
    }
}

/// One check of an exercise, read from its line (ports already rewritten).
#[derive(Debug)]
enum Check {
    Is(usize, Regex),
    Has(usize, Regex),
    Picks(usize, Vec<String>),
    Log {
        line: LogLine,
        window: Option<(f64, f64)>,
    },
}

#[derive(Debug)]
enum LogLine {
    Containing(String),
    Matching(Regex),
}

impl LogLine {
    fn found_in(&self, line: &str) -> bool {
        match self {
            LogLine::Containing(text) => line.contains(text.as_str()),
            LogLine::Matching(re) => re.is_match(line),
        }
    }
}

fn regex(text: &str, anchored: bool) -> Result<Regex, String> {
    let pattern = if anchored {
        format!(r"\A(?:{text})\z")
    } else {
        text.to_string()
    };
    Regex::new(&pattern).map_err(|e| format!("{text:?}: {e}"))
}

impl Check {
    /// The block it checks, if it checks one.
    fn block(&self) -> Option<usize> {
        match self {
            Check::Is(n, _) | Check::Has(n, _) | Check::Picks(n, _) => Some(*n),
            Check::Log { .. } => None,
        }
    }

    fn parse(line: &str) -> Result<Check, String> {
        if let Some(rest) = line.strip_prefix("block ") {
            let (n, rest) = rest.split_once(' ').ok_or("`block N WHAT ...`")?;
            let n: usize = n
                .parse()
                .map_err(|_| format!("{n:?} is not a block number"))?;
            let (what, arg) = rest.split_once(' ').ok_or("`block N WHAT ...`")?;
            return match what {
                "is" => Ok(Check::Is(n, regex(arg, true)?)),
                "has" => Ok(Check::Has(n, regex(arg, false)?)),
                "picks" => Ok(Check::Picks(
                    n,
                    arg.split_whitespace().map(String::from).collect(),
                )),
                _ => Err(format!("{what:?}: a block check is `is`, `has` or `picks`")),
            };
        }
        let rest = line
            .strip_prefix("log ")
            .ok_or("a check starts with `block` or `log`")?;
        let (window, rest) = match rest.strip_prefix('+') {
            Some(timed) => {
                let (window, rest) = timed.split_once("s ").ok_or("`log +A..Bs TEXT`")?;
                let (a, b) = window.split_once("..").ok_or("`log +A..Bs TEXT`")?;
                let secs = |s: &str| s.parse::<f64>().map_err(|_| format!("{s:?}: not seconds"));
                (Some((secs(a)?, secs(b)?)), rest)
            }
            None => (None, rest),
        };
        let line = match rest.strip_prefix("matching ") {
            Some(re) => LogLine::Matching(regex(re, false)?),
            None => LogLine::Containing(rest.to_string()),
        };
        Ok(Check::Log { line, window })
    }
}

/// The time of day of a log line (`2026-12-06T22:08:53.786Z ...`), in seconds.
fn log_time(line: &str) -> Option<f64> {
    let clock = line.get(11..23)?;
    let mut parts = clock.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// A program run by bash in its own process group, so that what it starts goes with it.
fn bash(script: &str, dir: &Path, output: &Path) -> io::Result<Child> {
    let out = File::create(output)?;
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
}

/// Ends `child` and everything it started.
fn end(mut child: Child) {
    // SAFETY: kill(2) on the process group the child leads (see `bash`), or on the child alone.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// True when `program` runs here.
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One run of one exercise: its folder, its ports, the balancer and the loops it runs.
struct Run {
    dir: TempDir,
    ports: Ports,
    log: PathBuf,
    balancer: Option<Child>,
    background: Vec<Child>,
}

impl Run {
    fn new() -> Result<Run, String> {
        let dir = TempDir::new("exercise");
        let ports = Ports::free();
        let teach =
            fs::read_to_string(repo().join("docs/teach.conf")).map_err(|e| e.to_string())?;
        fs::create_dir_all(dir.path().join("docs")).map_err(|e| e.to_string())?;
        fs::write(dir.path().join("docs/teach.conf"), ports.rewrite(&teach))
            .map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink(repo().join("benches"), dir.path().join("benches"))
            .map_err(|e| e.to_string())?;
        let log = dir.path().join("balancer.log");
        File::create(&log).map_err(|e| e.to_string())?;
        Ok(Run {
            dir,
            ports,
            log,
            balancer: None,
            background: Vec::new(),
        })
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's last lines but the access log's, for a failure message.
    fn log_tail(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" access: ")).collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Starts the balancer with `command` (`cargo run --release -- ARGS`, as written), the
    /// running one stopped; returns once it accepts connections.
    fn start(&mut self, command: &str) -> Result<(), String> {
        let args = command
            .trim()
            .strip_prefix("cargo run --release --")
            .ok_or_else(|| format!("{command:?} does not start with `cargo run --release --`"))?;
        if let Some(old) = self.balancer.take() {
            end(old);
        }
        let log = OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let binary = env!("CARGO_BIN_EXE_loadbalancer");
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec '{binary}' {}", self.ports.rewrite(args)))
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.ports.balancer();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let exited = child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || Instant::now() > deadline {
                end(child);
                return Err(format!("the balancer did not start:\n{}", self.log_tail()));
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.balancer = Some(child);
        if self.log_text().contains("not starting a demo server") {
            // A port taken between choosing it and binding it: another run will choose again.
            return Err(format!(
                "a demo server could not start:\n{}",
                self.log_tail()
            ));
        }
        Ok(())
    }

    /// Runs block `n` (from 1), `text`, as the module documentation says; returns where its
    /// output goes.
    fn block(&mut self, n: usize, text: &str) -> Result<PathBuf, String> {
        let output = self.dir.path().join(format!("block-{n}.out"));
        let mut lines: Vec<&str> = text.lines().collect();
        let start = match lines.last() {
            Some(l) if l.trim_start().starts_with("cargo run") => lines.pop(),
            _ => None,
        };
        let script = self.ports.rewrite(&lines.join("\n"));
        if lines.iter().any(|l| l.contains("cargo run")) {
            return Err(format!(
                "block {n}: `cargo run` must be the block's last line"
            ));
        }
        if script.trim_start().starts_with("while true") {
            let child = bash(&script, self.dir.path(), &output).map_err(|e| e.to_string())?;
            self.background.push(child);
        } else if !script.trim().is_empty() {
            let child = bash(&script, self.dir.path(), &output).map_err(|e| e.to_string())?;
            self.wait(child, n)?;
        }
        if let Some(command) = start {
            self.start(command)?;
        }
        Ok(output)
    }

    fn wait(&self, mut child: Child, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                end(child);
                return Err(format!("block {n} still running after {BLOCK_TIMEOUT:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Finds each `log` check's line, in order, waiting for it up to [`LOG_WAIT`].
    fn check_log(&self, checks: &[(&str, Check)]) -> Result<(), String> {
        let deadline = Instant::now() + LOG_WAIT;
        let mut after = 0;
        let mut previous: Option<f64> = None;
        for (text, check) in checks {
            let Check::Log { line, window } = check else {
                continue;
            };
            let (index, time) = loop {
                let log = self.log_text();
                let found = log
                    .lines()
                    .enumerate()
                    .skip(after)
                    .find(|(_, l)| line.found_in(l));
                if let Some((i, l)) = found {
                    break (i, log_time(l));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "`{text}`: no such line after line {after} of the log:\n{}",
                        self.log_tail()
                    ));
                }
                thread::sleep(Duration::from_millis(50));
            };
            if let (Some((a, b)), Some(before), Some(at)) = (window, previous, time) {
                let took = at - before;
                if took < *a || took > *b {
                    return Err(format!(
                        "`{text}`: the line came {took:.2} s after the one before:\n{}",
                        self.log_tail()
                    ));
                }
            }
            after = index + 1;
            previous = time;
        }
        Ok(())
    }

    /// The block checks of the blocks `which` selects, on their outputs.
    fn check_blocks(
        &self,
        checks: &[(&str, Check)],
        outputs: &[PathBuf],
        which: impl Fn(usize) -> bool,
    ) -> Result<(), String> {
        for (text, check) in checks {
            if check.block().is_some_and(|n| !which(n)) {
                continue;
            }
            let (n, held, saw) = match check {
                Check::Is(n, re) => {
                    let out = self.output(outputs, *n)?;
                    (n, re.is_match(out.trim()), out)
                }
                Check::Has(n, re) => {
                    let out = self.output(outputs, *n)?;
                    (n, re.is_match(&out), out)
                }
                Check::Picks(n, names) => {
                    let out = self.output(outputs, *n)?;
                    let picked = self.picks(&out);
                    let saw = format!("the picks {}, in\n{out}", picked.join(" "));
                    (n, &picked == names, saw)
                }
                Check::Log { .. } => continue,
            };
            if !held {
                return Err(format!("`{text}`: block {n} wrote {saw}"));
            }
        }
        Ok(())
    }

    fn output(&self, outputs: &[PathBuf], n: usize) -> Result<String, String> {
        let path = outputs
            .get(n.wrapping_sub(1))
            .ok_or_else(|| format!("there is no block {n}"))?;
        Ok(fs::read_to_string(path).unwrap_or_default())
    }

    /// The backends `output` names, in order: `pick=localhost:PORT` of an explain header, or
    /// `Hello from serverN` of a demo server's body.
    fn picks(&self, output: &str) -> Vec<String> {
        static NAMES: OnceLock<Regex> = OnceLock::new();
        let names = NAMES.get_or_init(|| {
            Regex::new(r"pick=(?:localhost|127\.0\.0\.1):(\d+)|Hello from (server\d+)").unwrap()
        });
        names
            .captures_iter(output)
            .map(|c| match (c.get(1), c.get(2)) {
                (Some(port), _) => self.ports.server(port.as_str().parse().unwrap_or(0)),
                (_, Some(name)) => name.as_str().to_string(),
                _ => unreachable!(),
            })
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for child in self.background.drain(..) {
            end(child);
        }
        if let Some(child) = self.balancer.take() {
            end(child);
        }
    }
}

/// One run of `exercise` on a fresh balancer: its blocks, then its checks.
fn attempt(start: &str, exercise: &Exercise) -> Result<(), String> {
    let mut run = Run::new()?;
    let checks = exercise
        .checks
        .iter()
        .map(|c| Ok((c.as_str(), Check::parse(&run.ports.rewrite(c))?)))
        .collect::<Result<Vec<_>, String>>()?;
    let restarts = |b: &String| b.lines().last().is_some_and(|l| l.starts_with("cargo run"));
    if !exercise.blocks.first().is_some_and(restarts) {
        run.start(start)?;
    }
    let mut outputs = Vec::new();
    for (i, block) in exercise.blocks.iter().enumerate() {
        outputs.push(run.block(i + 1, block)?);
    }
    // The blocks that ran to their end first, then the log while the loops still run, then the
    // loops' output once they are stopped.
    let looping = |n: usize| {
        let block = exercise.blocks.get(n.wrapping_sub(1));
        block.is_some_and(|b| b.trim_start().starts_with("while true"))
    };
    run.check_blocks(&checks, &outputs, |n| !looping(n))?;
    run.check_log(&checks)?;
    for child in run.background.drain(..) {
        end(child);
    }
    run.check_blocks(&checks, &outputs, looping)
}

fn exercises() -> Exercises {
    let text = fs::read_to_string(repo().join("docs/EXERCISES.md")).unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_exercise_says_what_is_checked() {
    let exercises = exercises();
    assert!(
        exercises
            .start
            .contains("cargo run --release -- --demo --config docs/teach.conf"),
        "{}",
        exercises.start
    );
    assert!(exercises.list.len() >= 9, "{:#?}", exercises.list);
    let mut wrong = Vec::new();
    for ex in &exercises.list {
        if ex.skipped {
            continue;
        }
        if ex.checks.is_empty() {
            wrong.push(format!(
                "{}: no `<!-- check ... -->` and no `<!-- unchecked: why -->`",
                ex.title
            ));
        }
        for check in &ex.checks {
            if let Err(e) = Check::parse(&Ports::as_written().rewrite(check)) {
                wrong.push(format!("{}: `{check}`: {e}", ex.title));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_exercise_holds_as_written() {
    if !have("curl") {
        eprintln!("SKIPPED every_exercise_holds_as_written: no curl here");
        assert!(std::env::var_os("CI").is_none(), "CI needs curl");
        return;
    }
    let exercises = exercises();
    let python = have("python3");
    // `EXERCISE=4 cargo test --test operations exercises` runs exercise 4 alone.
    let only = std::env::var("EXERCISE").ok();
    let runs: Vec<_> = exercises
        .list
        .iter()
        .filter(|ex| !ex.skipped && !ex.checks.is_empty())
        .filter(|ex| {
            only.as_ref()
                .is_none_or(|n| ex.title.starts_with(&format!("{n}.")))
        })
        .map(|ex| {
            let start = exercises.start.clone();
            let ex = ex.clone();
            thread::spawn(move || {
                if !python && ex.blocks.iter().any(|b| b.contains("python3 ")) {
                    eprintln!("SKIPPED exercise {}: no python3 here", ex.title);
                    return (ex.title, Vec::new(), true);
                }
                let began = Instant::now();
                let mut failures = Vec::new();
                let heavy = ex.blocks.iter().any(|b| b.contains("python3 "));
                for attempt_number in 0..ATTEMPTS {
                    let outcome = if heavy || attempt_number > 0 {
                        let _alone = LOAD.write().unwrap_or_else(|e| e.into_inner());
                        attempt(&start, &ex)
                    } else {
                        let _beside = LOAD.read().unwrap_or_else(|e| e.into_inner());
                        attempt(&start, &ex)
                    };
                    match outcome {
                        Ok(()) => break,
                        Err(e) => failures.push(e),
                    }
                }
                let passed = failures.len() < ATTEMPTS;
                eprintln!(
                    "exercise {}: {} in {:.1} s, {} failed run(s){}",
                    ex.title,
                    if passed { "holds" } else { "FAILS" },
                    began.elapsed().as_secs_f64(),
                    failures.len(),
                    ex.unchecked
                        .iter()
                        .map(|u| format!("; not checked: {u}"))
                        .collect::<String>()
                );
                (ex.title, failures, passed)
            })
        })
        .collect();
    let mut failed = Vec::new();
    for run in runs {
        let (title, failures, passed) = run.join().unwrap();
        for (i, f) in failures.iter().enumerate() {
            eprintln!("--- exercise {title}, run {}: {f}", i + 1);
        }
        if !passed {
            failed.push(format!("{title}: {}", failures.last().unwrap()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
