#!/usr/bin/env bash
# The slow-clients attack at full size against the release build: N slow uploads (one byte a second
# against Content-Length: 100000) and N clients that read nothing of a 4 MiB answer, with a normal
# client making sequential GETs on new connections beside them (benches/slow_clients.py). Prints
# the normal client's latency and errors, the workers busy, the connections waiting on slow
# clients, the bytes buffered and the balancer's peak memory.
#
#   benches/slow_clients.sh                 # from the repository root: N=1000, 15 s of GETs
#   N=200 SECONDS_=5 benches/slow_clients.sh
#   LB_BIN=/tmp/old/loadbalancer benches/slow_clients.sh   # another build (without /status
#                                                           # fields it prints no samples)
#
# Environment (defaults in brackets): N [1000]; SECONDS_ [15]; WORKERS [64]; PORT [18180], the
# backend on PORT+1, admin on PORT+2; LB_BIN [target/release/loadbalancer].
# The backend is the demo server1 (servers/, release build), answering /bytes/4194304.
# Loopback only; everything it starts is stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000} SECONDS_=${SECONDS_:-15} WORKERS=${WORKERS:-64} PORT=${PORT:-18180}
LB_BIN=${LB_BIN:-target/release/loadbalancer}
SERVER_BIN=target/release/server1
NAME=slow_clients.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh
ensure_built "$LB_BIN"
ensure_built "$SERVER_BIN"
# Each slow client is one descriptor here and one (or two) in the balancer.
ulimit -n "$(ulimit -Hn)"

start_work slow_clients

"$SERVER_BIN" --port "$((PORT + 1))" 2>"$work/server.log" &
children+=($!)
await_port "$((PORT + 1))"
cat >"$work/lb.conf" <<EOF
listen 127.0.0.1:$PORT
admin 127.0.0.1:$((PORT + 2))
workers $WORKERS
access_log ${ACCESS_LOG:-off}
health off
backend http://127.0.0.1:$((PORT + 1))
EOF
"$LB_BIN" --config "$work/lb.conf" 2>"$work/lb.log" &
lb=$!
children+=("$lb")
await_port "$PORT"
python3 benches/slow_clients.py "127.0.0.1:$PORT" --uploads "$N" --readers "$N" \
    --big /bytes/4194304 --seconds "$SECONDS_" --admin "127.0.0.1:$((PORT + 2))" --pid "$lb" || true
grep -E "WARN|ERROR" "$work/lb.log" | head -5 || true
[[ -n ${KEEP_LOG:-} ]] && cp "$work/lb.log" "$KEEP_LOG"
true
