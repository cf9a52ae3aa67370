#!/usr/bin/env bash
# Throughput of the balancer next to HAProxy, in front of the same three nginx backends, under the
# same wrk load, on loopback. One balancer runs at a time on the same port; each round runs both,
# in alternating order, and the ratio ours/HAProxy is taken within the round, because on a shared
# machine the absolute rate drifts from minute to minute. Prints a row per round and the median
# ratio. See docs/PERFORMANCE.md for the method and the history of the figures.
#
#   benches/peers.sh                      # from the repository root
#   ROUNDS=2 D=3 benches/peers.sh         # a quick look
#
# Environment (defaults in brackets):
#   C       wrk connections [50]          D     seconds measured per balancer and round [8]
#   W       warm-up seconds before each measurement [2]
#   ROUNDS  rounds [10]                   PORT  balancer port; backends on PORT+1..PORT+3 [18080]
#   LB_BIN  the balancer binary [target/release/loadbalancer, built with cargo if missing]
#
# Installs nothing: it needs nginx, haproxy and wrk on PATH (Debian: apt-get install nginx haproxy
# wrk). Everything runs in this script's session: backends started in a session of their own get a
# CPU share of their own from the kernel's autogroup scheduler, which skews the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

C=${C:-50} D=${D:-8} W=${W:-2} ROUNDS=${ROUNDS:-10} PORT=${PORT:-18080}
LB_BIN=${LB_BIN:-target/release/loadbalancer}

missing=()
for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "peers.sh: missing ${missing[*]}: install with  apt-get install ${missing[*]}" >&2
    exit 2
fi
if [[ ! -x $LB_BIN ]]; then
    echo "peers.sh: $LB_BIN not found, building it (cargo build --release)" >&2
    cargo build --release --quiet
fi

work=$(mktemp -d /tmp/peers.XXXXXX)
chmod 755 "$work"
children=()
cleanup() {
    for pid in "${children[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Waits until something accepts connections on 127.0.0.1:$1 (10 s at most).
await_port() {
    local tries
    for tries in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "peers.sh: nothing listens on port $1" >&2
    return 1
}

# Waits until nothing accepts connections on 127.0.0.1:$1 any more.
await_free() {
    local tries
    for tries in $(seq 200); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
}

# Three nginx backends, one worker each, answering the demo servers' small JSON greeting.
backend_ports=("$((PORT + 1))" "$((PORT + 2))" "$((PORT + 3))")
{
    echo "worker_processes 1; daemon off; pid $work/nginx.pid; error_log $work/nginx.err warn;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "  access_log off; keepalive_requests 1000000;"
    for i in 0 1 2; do
        p=${backend_ports[$i]}
        echo "  server { listen 127.0.0.1:$p; default_type application/json;"
        echo "    location = /health { return 200 'ok'; }"
        echo "    location / { return 200 '{\"message\":\"Hello from server$((i + 1))\",\"address\":\":$p\"}'; } }"
    done
    echo "}"
} >"$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" &
children+=($!)
for p in "${backend_ports[@]}"; do await_port "$p"; done

cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend clients
  bind 127.0.0.1:$PORT
  default_backend pool
backend pool
  balance roundrobin
  server s1 127.0.0.1:${backend_ports[0]} check
  server s2 127.0.0.1:${backend_ports[1]} check
  server s3 127.0.0.1:${backend_ports[2]} check
EOF

{
    for p in "${backend_ports[@]}"; do echo "backend http://127.0.0.1:$p"; done
} >"$work/lb.conf"

# Runs balancer $1 (haproxy or ours) on $PORT under wrk; prints "req/s p50 p99".
measure() {
    local pid
    case $1 in
    haproxy) haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & ;;
    ours) "$LB_BIN" --config "$work/lb.conf" --listen "127.0.0.1:$PORT" --admin off \
        --access-log off >"$work/ours.log" 2>&1 & ;;
    esac
    pid=$!
    await_port "$PORT"
    wrk -t1 -c"$C" -d"${W}s" "http://127.0.0.1:$PORT/" >/dev/null
    wrk -t1 -c"$C" -d"${D}s" --latency "http://127.0.0.1:$PORT/" >"$work/wrk.out"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    await_free "$PORT"
    awk '/Requests\/sec/ {rps = $2} /^ +50%/ {p50 = $2} /^ +99%/ {p99 = $2}
         /Non-2xx|Socket errors/ {bad = bad " " $0}
         END {
             if (bad != "") print "peers.sh: wrk reported errors:" bad > "/dev/stderr"
             printf "%d %s %s\n", rps, p50, p99
         }' "$work/wrk.out"
}

echo "wrk -t1 -c$C, ${D}s per balancer after ${W}s warm-up, $ROUNDS rounds; $("$LB_BIN" --version)"
printf '%-5s %-8s %12s %10s %10s %12s %10s %10s %7s\n' \
    round first haproxy_rps p50 p99 ours_rps p50 p99 ratio
ratios=()
for round in $(seq "$ROUNDS"); do
    # Alternate which runs first, so drift in the machine's load does not favour either.
    if ((round % 2)); then
        read -r h_rps h_p50 h_p99 < <(measure haproxy)
        read -r o_rps o_p50 o_p99 < <(measure ours)
        first=haproxy
    else
        read -r o_rps o_p50 o_p99 < <(measure ours)
        read -r h_rps h_p50 h_p99 < <(measure haproxy)
        first=ours
    fi
    ratio=$(awk -v o="$o_rps" -v h="$h_rps" 'BEGIN {printf "%.3f", (h > 0 ? o / h : 0)}')
    ratios+=("$ratio")
    printf '%-5s %-8s %12s %10s %10s %12s %10s %10s %7s\n' \
        "$round" "$first" "$h_rps" "$h_p50" "$h_p99" "$o_rps" "$o_p50" "$o_p99" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{r[NR] = $1}
    END {
        m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
        printf "median ratio loadbalancer/HAProxy over %d rounds: %.3f (range %s to %s)\n", NR, m, r[1], r[NR]
    }'
