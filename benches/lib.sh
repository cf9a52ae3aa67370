# Shared by the benchmark scripts (source it): a work directory removed at exit with every child the
# script started, and waiting for a loopback port to open or close.
#
#   NAME=peers.sh; source benches/lib.sh; require_tools wrk; ensure_built "$LB_BIN"
#   start_work peers; children+=($!); await_port 18080

children=()

# Exits with a message naming what to install when one of the tools "$@" is not on PATH.
require_tools() {
    local missing=() tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "${NAME:-bench}: missing ${missing[*]}: install with  apt-get install ${missing[*]}" >&2
        exit 2
    fi
}

# Builds the release binaries when $1 is missing.
ensure_built() {
    if [[ ! -x $1 ]]; then
        echo "${NAME:-bench}: $1 not found, building it (cargo build --release)" >&2
        cargo build --release --quiet --workspace --bins
    fi
}

# Makes "$work", a fresh directory under /tmp readable by nginx workers, and removes it and stops
# every pid in "${children[@]}" (and "$lb_pid" when set) when the script exits.
start_work() {
    work=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$work"
    trap cleanup EXIT
}

cleanup() {
    [[ -n ${lb_pid:-} ]] && kill "$lb_pid" 2>/dev/null || true
    for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# Waits until something accepts connections on 127.0.0.1:$1 (10 s at most).
await_port() {
    local tries
    for tries in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "${NAME:-bench}: nothing listens on port $1" >&2
    return 1
}

# Exits with a message if something already accepts connections on any of the ports given: a
# bench would otherwise measure whatever listens there (another bench's nginx, say).
require_free_ports() {
    local p
    for p in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "${NAME:-bench}: port $p is in use already: choose another PORT=" >&2
            exit 1
        fi
    done
}

# Waits until nothing accepts connections on 127.0.0.1:$1 any more (10 s at most).
await_free() {
    local tries
    for tries in $(seq 200); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
}

# Starts nginx in "$work" with one backend per port given (one worker process in all), each
# answering the demo servers' small JSON greeting from a file and /health with 200, as the demo
# backends do (a `return 200` answer is cheaper for nginx, which shifts the ratios: 0.67 instead
# of 0.75 for the same build at C=50); waits until each port accepts.
start_nginx_backends() {
    local i=0 p
    {
        echo "worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err warn;"
        echo "events { worker_connections 4096; }"
        echo "http {"
        echo "  access_log off; keepalive_requests 1000000;"
        for p in "$@"; do
            mkdir -p "$work/root$i"
            printf '{"message":"Hello from server%s","address":":%s"}' "$((i + 1))" "$p" >"$work/root$i/body"
            echo "  server { listen 127.0.0.1:$p; root $work/root$i;"
            echo "    location / { default_type application/json; rewrite ^ /body break; }"
            echo "    location = /health { return 200 'ok'; } }"
            i=$((i + 1))
        done
        echo "}"
    } >"$work/nginx.conf"
    nginx -c "$work/nginx.conf" -p "$work" &
    children+=($!)
    for p in "$@"; do await_port "$p"; done
}

# Writes "$work/haproxy.cfg": HAProxy on 127.0.0.1:$1 balancing round-robin over the backend
# ports that follow, two threads, keep-alive to the backends, health-checking GET /health as
# ours does (every 2 s, rise 2, fall 3).
write_haproxy_cfg() {
    local front=$1 i=1 p
    shift
    {
        printf 'global\n  nbthread 2\n  maxconn 4000\n'
        printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n'
        printf 'frontend clients\n  bind 127.0.0.1:%s\n  default_backend pool\n' "$front"
        printf 'backend pool\n  balance roundrobin\n  option httpchk GET /health\n'
        for p in "$@"; do
            printf '  server s%s 127.0.0.1:%s check inter 2s rise 2 fall 3\n' "$i" "$p"
            i=$((i + 1))
        done
    } >"$work/haproxy.cfg"
}

# "req/s p50 p99" (the latencies in milliseconds) of the `wrk --latency` output in file $1, and $3 after
# them; complains on stderr, naming $2, when wrk reported errors.
wrk_summary() {
    awk -v script="${NAME:-bench}" -v name="$2" -v extra="${3:-}" 'function ms(t) {
             if (t ~ /us$/) return substr(t, 1, length(t) - 2) / 1000
             if (t ~ /ms$/) return substr(t, 1, length(t) - 2) + 0
             if (t ~ /s$/) return substr(t, 1, length(t) - 1) * 1000
             return t
         }
         /Requests\/sec/ {rps = $2} /^ +50%/ {p50 = ms($2)} /^ +99%/ {p99 = ms($2)}
         /Non-2xx|Socket errors/ {bad = bad " " $0}
         END {
             if (bad != "") print script ": " name ": wrk reported errors:" bad > "/dev/stderr"
             printf "%d %.2f %.2f%s\n", rps, p50, p99, extra
         }' "$1"
}

# $1 / $2 to three decimals (0 when $2 is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}'; }

# The median and range of the numbers on standard input.
median() {
    sort -n | awk '{r[NR] = $1}
        END {
            m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
            printf "%.3f (range %s to %s)", m, r[1], r[NR]
        }'
}
