//! Tests of the grammar, the flags and `--check`.

use super::*;

fn err(text: &str) -> String {
    Config::parse(text, "lb.conf").unwrap_err().to_string()
}

#[test]
fn defaults_match_design() {
    let c = Config::default();
    assert_eq!(c.listen, "0.0.0.0:8080");
    assert_eq!(c.admin.as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(c.backends.len(), 3);
    assert_eq!(c.backends[0].url, "http://localhost:8081");
    assert_eq!(c.timeouts.connect, Duration::from_secs(2));
    assert_eq!(c.timeouts.response, Duration::from_secs(30));
    assert_eq!(c.timeouts.send, None, "follows the response timeout");
    assert_eq!(c.timeouts.send_timeout(), Duration::from_secs(30));
    assert_eq!((c.health.rise, c.health.fall), (2, 3));
    assert_eq!(c.breaker.failures, 5);
}

#[test]
fn parses_the_design_example() {
    let text = "\
listen    0.0.0.0:8080
admin     127.0.0.1:9090
workers   64
queue     1024
timeouts  connect=2s response=30s
retries   2 budget=20%
health    path=/health interval=2s timeout=1s rise=2 fall=3
breaker   failures=5 cooldown=10s max_cooldown=5m
slow_start 10s
access_log on
backend   http://localhost:8081 weight=1   # a comment
backend   http://localhost:8082 weight=5
";
    let c = Config::parse(text, "x").unwrap();
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.backends[1].weight, 5);
    assert_eq!(c.breaker.max_cooldown, Duration::from_secs(300));
    assert_eq!(c.retries.budget_percent, 20);
}

#[test]
fn errors_name_file_line_and_problem() {
    assert_eq!(
        err("workers 4\n\nworkers 5\n"),
        "lb.conf:3: setting \"workers\" is given twice"
    );
    assert_eq!(
        err("# c\nfrobnicate 1\n"),
        "lb.conf:2: frobnicate: unknown setting \"frobnicate\""
    );
    assert!(err("timeouts connect=2x\n").starts_with("lb.conf:1: timeouts: bad duration"));
    assert!(err("backend ftp://x:1\n").starts_with("lb.conf:1: backend:"));
    assert!(err("backend http://a:1\nbackend http://a:1\n").starts_with("lb.conf:2:"));
    assert!(err("backend http://a:1 weight=0\n").contains("weight"));
    assert!(err("workers 0\n").starts_with("lb.conf:1: workers:"));
    assert!(err("listen nowhere\n").starts_with("lb.conf:1: listen: bad address"));
    assert!(err("timeouts connect=2s connect=3s\n").contains("twice"));
    assert!(err("health interval=0s\n").contains("more than zero"));
    assert!(err("admin 0.0.0.0:9090\n").contains("needs a token"));
    assert!(err("limits max_request_line=32KiB\n").contains("must not be larger than max_head"));
    assert!(err("limits max_head=100B\n").contains("max_head must be between"));
    assert!(err("timeouts head=0s\n").contains("head timeout must be more than zero"));
    assert!(err("queue 0\n").contains("queue must be a whole number"));
}

/// docs/teach.conf: every mechanism shows within a minute.
#[test]
fn the_teaching_config_has_short_timers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/teach.conf");
    let c = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert_eq!((c.health.rise, c.health.fall), (2, 2));
    assert_eq!(c.breaker.failures, 3);
    assert_eq!(c.breaker.cooldown, Duration::from_secs(2));
    assert_eq!(c.breaker.max_cooldown, Duration::from_secs(10));
    assert_eq!(c.slow_start, Duration::from_secs(5));
    assert_eq!(c.retries.count, 2);
    assert_eq!(c.filter.rate_limits.len(), 1);
    let ban = c.filter.ban.expect("a ban");
    assert!(ban.window <= Duration::from_secs(20) && ban.duration <= Duration::from_secs(30));
    let ports: Vec<u16> = c.backends.iter().map(|b| b.port).collect();
    assert_eq!(ports, [8081, 8082, 8083]);
}

#[test]
fn unknown_keys_and_options_get_a_suggestion() {
    assert_eq!(
        err("workrs 4\n"),
        "lb.conf:1: workrs: unknown setting \"workrs\": did you mean workers?"
    );
    assert_eq!(
        err("rate_limt rate=5/s\n"),
        "lb.conf:1: rate_limt: unknown setting \"rate_limt\": did you mean rate_limit?"
    );
    assert_eq!(
        err("health intervl=2s\n"),
        "lb.conf:1: health: unknown option \"intervl\": did you mean interval? (expected one \
         of: path, interval, timeout, rise, fall)"
    );
    assert!(err("ban windw=1m\n").contains("did you mean window?"));
    // Nothing close: no guess.
    assert_eq!(
        err("frobnicate 1\n"),
        "lb.conf:1: frobnicate: unknown setting \"frobnicate\""
    );
}

#[test]
fn durations_and_sizes() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("2").is_err());
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("99999999999999999h").is_err());
    assert_eq!(parse_size("8KiB").unwrap(), 8192);
    assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
    assert!(parse_size("10MB").is_err());
}

#[test]
fn backend_urls() {
    let b = BackendConfig::parse("http://localhost", 1).unwrap();
    assert_eq!((b.host.as_str(), b.port), ("localhost", 80));
    let b = BackendConfig::parse("http://[::1]:9000/", 2).unwrap();
    assert_eq!(
        (b.host.as_str(), b.port, b.url.as_str()),
        ("::1", 9000, "http://[::1]:9000")
    );
    assert!(BackendConfig::parse("http://a:1/path", 1).is_err());
    assert!(BackendConfig::parse("http://a:0", 1).is_err());
    assert!(BackendConfig::parse("http://a:99999", 1).is_err());
    assert!(BackendConfig::parse("http://", 1).is_err());
}

#[test]
fn flags_override_the_file() {
    let dir = std::env::temp_dir().join(format!("lbcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x.conf");
    std::fs::write(&file, "workers 8\nbackend http://a:1\nbackend http://b:2\n").unwrap();
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cli = parse_args_in(
        args(&[
            "--config",
            file.to_str().unwrap(),
            "--workers",
            "3",
            "--backend=http://c:3,weight=4",
        ]),
        &dir,
    )
    .unwrap();
    assert_eq!(cli.config.workers, 3);
    assert_eq!(cli.config.backends.len(), 1);
    assert_eq!(cli.config.backends[0].weight, 4);
    let e = parse_args_in(args(&["--workers", "x"]), &dir).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--workers: workers must be a whole number in 1..4096, not \"x\""
    );
    assert!(parse_args_in(args(&["--bogus"]), &dir).is_err());
    let e = parse_args_in(args(&["--workrs", "3"]), &dir).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--workrs: unknown option, did you mean --workers? (see --help)"
    );
    assert!(parse_args_in(args(&["--listen"]), &dir).is_err());
    // the default file in the working directory is used when present
    std::fs::write(dir.join(DEFAULT_CONFIG_FILE), "workers 9\n").unwrap();
    assert_eq!(parse_args_in(args(&[]), &dir).unwrap().config.workers, 9);
    std::fs::remove_dir_all(&dir).ok();
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn retry_timeouts_is_off_by_default_and_set_on_the_retries_line() {
    assert!(!Config::default().retries.on_timeout);
    let c = Config::parse("retries 2 budget=20% retry_timeouts=on\n", "x").unwrap();
    assert!(c.retries.on_timeout);
    assert_eq!(c.retries.budget_percent, 20);
    assert!(err("retries 2 retry_timeouts=yes\n").contains("retry_timeouts must be on or off"));
}

#[test]
fn upgrades_are_websocket_by_default_and_set_on_the_upgrade_line() {
    let d = Config::default();
    assert_eq!(d.upgrade, ["websocket"]);
    assert_eq!(d.timeouts.tunnel, Duration::from_secs(3600));
    assert_eq!(d.limits.tunnels, 10_000);
    assert!(Config::parse("upgrade off\n", "x")
        .unwrap()
        .upgrade
        .is_empty());
    let c = Config::parse("upgrade allow=WebSocket,h2c\n", "x").unwrap();
    assert_eq!(c.upgrade, ["websocket", "h2c"]);
    assert!(err("upgrade allow=\n").contains("upgrade allow= takes protocol names"));
    assert!(err("upgrade allow=a/b\n").contains("upgrade allow= takes protocol names"));
    assert!(err("upgrade on\n").contains("expected name=value"));
    assert!(err("limits tunnels=0\n").contains("tunnels"));
    assert!(err("timeouts tunnel=0s\n").contains("tunnel timeout must be more than zero"));
}

#[test]
fn the_printed_configuration_parses_back_to_the_same() {
    let text = "\
listen 127.0.0.1:8000
admin 127.0.0.1:9999
workers 7
queue 99
timeouts connect=250ms response=1500ms send=4s client=2m head=3s body=20s queue=750ms tunnel=5m
request_buffering off
upgrade allow=websocket,Foo
buffers memory=16KiB memory_total=1MiB temp_dir=/ temp_file=2MiB temp_total=8MiB
retries 3 budget=50% retry_timeouts=on
health path=/up interval=1h timeout=3s rise=4 fall=5
breaker failures=9 cooldown=1m max_cooldown=2h statuses=500,503
slow_start off
access_log off path=/var/log/lb/access.log format=json
explain on
drain_timeout 0s
deny 10.0.0.0/8 192.0.2.7 2001:db8::/32
allow 127.0.0.0/8 ::1
trusted_proxies 10.1.0.0/16
shared redis=redis://127.0.0.1:6390/1 prefix=x: timeout=7ms connect_timeout=1s fallback=closed instances=4
rate_limit rate=100/s burst=200 shared=on
rate_limit rate=10/m path=/login
ban after=3 window=1m duration=10m
limits max_target=8KiB max_body=1000B max_clients=5000 max_head=32KiB max_connections=700 tunnels=50
deny_method TRACE connect
deny_path /.git /admin
backend http://localhost:8081 weight=3
backend http://[::1]:9000
";
    let c = Config::parse(text, "x").unwrap();
    let printed = c.to_string();
    assert_eq!(Config::parse(&printed, "printed").unwrap(), c, "{printed}");
    assert!(printed.contains(
        "timeouts      connect=250ms response=1500ms send=4s client=2m head=3s body=20s queue=750ms \
         tunnel=5m"
    ));
    assert!(printed.contains("request_buffering off"));
    assert!(printed.contains("upgrade       allow=websocket,foo"));
    assert!(printed.contains("access_log    off path=/var/log/lb/access.log format=json"));
    assert!(printed.contains("explain       on"));
    assert!(printed.contains(
        "buffers       memory=16KiB memory_total=1MiB temp_dir=/ temp_file=2MiB temp_total=8MiB"
    ));
    assert!(printed.contains(
        "limits        max_request_line=8KiB max_head=32KiB max_headers=100 \
         max_connections=700 tunnels=50 max_target=8KiB max_body=1000B max_clients=5000"
    ));
    // The defaults print every setting, and parse back too.
    let d = Config::default();
    assert_eq!(Config::parse(&d.to_string(), "d").unwrap(), d);
    // The token is hidden.
    let mut t = d.clone();
    t.admin_token = Some("s3cret".into());
    assert!(!t.to_string().contains("s3cret"));
    assert!(t.to_string().contains("token=********"));
}

#[test]
fn backend_flag_takes_the_weight_as_in_the_file() {
    let dir = std::env::temp_dir().join(format!("lbcfg-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for form in [
        &["--backend", "http://a:1", "weight=3"][..],
        &["--backend", "http://a:1 weight=3"],
        &["--backend", "http://a:1,weight=3"],
        &["--backend=http://a:1", "weight=3"],
    ] {
        let cli = parse_args_in(args(form), &dir).unwrap();
        assert_eq!(cli.config.backends.len(), 1, "{form:?}");
        assert_eq!(cli.config.backends[0].weight, 3, "{form:?}");
        assert!(!cli.default_backends);
    }
    let e = parse_args_in(args(&["--backend", "http://a:1", "weight=0"]), &dir).unwrap_err();
    assert!(e.to_string().starts_with("--backend: weight"), "{e}");
    // No file and no --backend: the defaults, noted for the start-up warning.
    let cli = parse_args_in(args(&[]), &dir).unwrap();
    assert!(cli.default_backends);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn explain_is_off_unless_asked_and_on_with_demo() {
    let dir = std::env::temp_dir().join(format!("lbcfg-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let explain = |form: &[&str]| parse_args_in(args(form), &dir).unwrap().config.explain;
    assert!(!explain(&[]));
    assert!(explain(&["--explain", "on"]));
    assert!(explain(&["--demo"]));
    assert!(!explain(&["--demo", "--explain=off"]));
    assert!(parse_args_in(args(&["--explain", "yes"]), &dir).is_err());
    assert!(!Config::default().explain);
    assert!(
        Config::parse(
            "explain on
",
            "x"
        )
        .unwrap()
        .explain
    );
    assert!(err("explain
")
    .contains("explain takes exactly one value"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tls_backends_get_a_clear_refusal_in_the_file_and_on_the_command_line() {
    let e = err("workers 2\nbackend https://api.example:443\n");
    assert!(e.starts_with("lb.conf:2: backend:"), "{e}");
    assert!(e.contains("TLS backends are not supported"), "{e}");
    assert!(e.contains("http://api.example:443"), "{e}");
    let dir = std::env::temp_dir();
    let e = parse_args_in(args(&["--backend", "https://b:8443"]), &dir).unwrap_err();
    assert!(e.to_string().starts_with("--backend:"), "{e}");
    assert!(
        e.to_string().contains("TLS backends are not supported"),
        "{e}"
    );
}

#[test]
fn admin_token_flag_allows_a_listener_off_loopback() {
    let dir = std::env::temp_dir().join(format!("lbcfg-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = parse_args_in(args(&["--admin", "0.0.0.0:9090"]), &dir).unwrap_err();
    assert!(e.to_string().contains("--admin-token SECRET"), "{e}");
    let cli = parse_args_in(
        args(&["--admin", "0.0.0.0:9090", "--admin-token", "s3cret"]),
        &dir,
    )
    .unwrap();
    assert_eq!(cli.config.admin_token.as_deref(), Some("s3cret"));
    assert!(parse_args_in(args(&["--admin-token="]), &dir).is_err());
    // --version and --help answer even when the config file is broken.
    std::fs::write(dir.join(DEFAULT_CONFIG_FILE), "workers zero\n").unwrap();
    assert!(parse_args_in(args(&["--version"]), &dir).unwrap().version);
    assert!(parse_args_in(args(&["--help"]), &dir).unwrap().help);
    assert!(parse_args_in(args(&[]), &dir).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn formats() {
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(format_size(10 << 20), "10MiB");
    assert_eq!(format_size(1000), "1000B");
    assert_eq!(format_size(0), "0B");
}

#[test]
fn access_log_takes_a_path_and_a_format() {
    use crate::logging::AccessFormat;
    let c = Config::parse("access_log path=/var/log/lb/a.log format=combined\n", "x").unwrap();
    assert!(c.access_log);
    let path = std::path::Path::new("/var/log/lb/a.log");
    assert_eq!(c.access_log_path.as_deref(), Some(path));
    assert_eq!(c.access_log_format, AccessFormat::Combined);
    let c = Config::parse("access_log off format=json\n", "x").unwrap();
    assert!(!c.access_log);
    assert_eq!(c.access_log_format, AccessFormat::Json);
    let c = Config::parse("access_log on\n", "x").unwrap();
    assert_eq!((c.access_log, c.access_log_path), (true, None));
    assert_eq!(
        err("\naccess_log path=logs/a.log\n"),
        "lb.conf:2: access_log: path must be an absolute path, not \"logs/a.log\""
    );
    assert_eq!(
        err("access_log format=common\n"),
        "lb.conf:1: access_log: format must be one of plain, combined, json, not \"common\""
    );
    assert_eq!(
        err("access_log yes\n"),
        "lb.conf:1: access_log: access_log must be on or off, not \"yes\""
    );
    assert!(err("access_log on fromat=json\n").contains("did you mean format?"));
    assert!(err("access_log\n").starts_with("lb.conf:1: access_log: access_log takes on, off"));
}
