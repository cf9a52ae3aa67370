#!/usr/bin/env bash
# What a shared rate limit costs: the balancer with no rate limit, with a local one and with a
# shared one (Redis), in front of the same nginx backend under the same wrk load, in rotating
# order within each round (ratios within a round: the machine's load drifts); and what Redis
# itself spends per check (INFO commandstats: usec_per_call of EVALSHA), how many checks went in
# one round trip (pipelining), and the round trip as the balancer saw it (/status p50, p99).
#
# The limit is high enough that nothing is refused: every request of the shared run is checked
# in Redis (a refused client would be answered from the near-cache, which costs nothing). All of
# wrk's connections come from 127.0.0.1, so they are one client: one key, the worst case for
# Redis (every check of the run on the same key).
#
#   benches/shared.sh                      # from the repository root
#   ROUNDS=2 D=3 benches/shared.sh         # a quick look
#
# Environment (defaults in brackets):
#   C       wrk connections [50]          D     seconds measured per run [5]
#   W       warm-up seconds before each measurement [1]
#   ROUNDS  rounds [5]                    PORT  balancer port; nginx, Redis and the admin
#                                               listener on PORT+1..PORT+3 [18180]
#   LB_BIN  the balancer binary [target/release/loadbalancer, built with cargo if missing]
#
# Installs nothing: it needs nginx, wrk, redis-server, redis-cli and curl on PATH (Debian:
# apt-get install nginx wrk redis-server curl).
set -euo pipefail
cd "$(dirname "$0")/.."

C=${C:-50} D=${D:-5} W=${W:-1} ROUNDS=${ROUNDS:-5} PORT=${PORT:-18180}
LB_BIN=${LB_BIN:-target/release/loadbalancer}
BACKEND=$((PORT + 1)) REDIS=$((PORT + 2)) ADMIN=$((PORT + 3))

NAME=shared.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh
require_tools nginx wrk redis-server redis-cli curl
require_free_ports "$PORT" "$BACKEND" "$REDIS" "$ADMIN"
ensure_built "$LB_BIN"

start_work shared
start_nginx_backends "$BACKEND"
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
children+=($!)
await_port "$REDIS"

limit="rate=1000000/s burst=1000000"
echo "backend http://127.0.0.1:$BACKEND" >"$work/none.conf"
{ cat "$work/none.conf"; echo "rate_limit $limit"; } >"$work/local.conf"
{
    cat "$work/none.conf"
    echo "shared redis=redis://127.0.0.1:$REDIS/0 timeout=50ms"
    echo "rate_limit $limit shared=on"
} >"$work/shared.conf"

# A field of the balancer's /status `shared` object.
shared_field() {
    curl -s "http://127.0.0.1:$ADMIN/status" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['shared'][sys.argv[1]])" "$1"
}

# Runs the balancer with config $1 (none, local or shared) under wrk; prints "req/s p50 p99" (ms)
# and, for shared, "usec_per_call checks_per_round_trip rtt_p50 rtt_p99" after them.
measure() {
    local pid
    "$LB_BIN" --config "$work/$1.conf" --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN" \
        --access-log off >"$work/$1.log" 2>&1 &
    pid=$!
    await_port "$PORT"
    wrk -t1 -c"$C" -d"${W}s" "http://127.0.0.1:$PORT/" >/dev/null
    redis-cli -p "$REDIS" CONFIG RESETSTAT >/dev/null
    local calls_before
    calls_before=$(curl -s "http://127.0.0.1:$ADMIN/metrics" |
        awk '/^lb_shared_calls_total\{result="ok"\}/ {print $2} END {if (!NR) print 0}')
    wrk -t1 -c"$C" -d"${D}s" --latency "http://127.0.0.1:$PORT/" >"$work/wrk.out"
    local extra=""
    if [[ $1 == shared ]]; then
        local stats calls_after p50 p99
        stats=$(redis-cli -p "$REDIS" INFO commandstats | tr -d '\r' | grep '^cmdstat_evalsha:')
        calls_after=$(curl -s "http://127.0.0.1:$ADMIN/metrics" |
            awk '/^lb_shared_calls_total\{result="ok"\}/ {print $2}')
        p50=$(shared_field rtt_p50_ms) p99=$(shared_field rtt_p99_ms)
        extra=$(awk -v s="$stats" -v before="${calls_before:-0}" -v after="$calls_after" \
            -v p50="$p50" -v p99="$p99" 'BEGIN {
                split(s, kv, /[:,=]/)
                for (i = 2; i < length(kv); i += 2) f[kv[i]] = kv[i + 1]
                trips = after - before
                printf " %.2f %.1f %.3f %.3f", f["usec_per_call"], (trips > 0 ? f["calls"] / trips : 0), p50, p99
            }')
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    await_free "$PORT"
    wrk_summary "$work/wrk.out" "$1" "$extra"
}

names=(none local shared)
echo "wrk -t1 -c$C, ${D}s per run after ${W}s warm-up, $ROUNDS rounds; $("$LB_BIN" --version)"
printf 'round\t%s\n' "none_rps none_p99 local_rps local_p99 shared_rps shared_p99 shared/local p99_shared/local redis_us_per_check checks_per_round_trip rtt_p50_ms rtt_p99_ms" |
    tr ' ' '\t'
declare -A rps p50 p99
throughput=() latency=() cost=() batch=() rtt50=() rtt99=()
for round in $(seq "$ROUNDS"); do
    order=()
    for i in "${!names[@]}"; do order+=("${names[$(((i + round) % ${#names[@]}))]}"); done
    for n in "${order[@]}"; do
        if [[ $n == shared ]]; then
            read -r "rps[$n]" "p50[$n]" "p99[$n]" us per r50 r99 < <(measure "$n")
        else
            read -r "rps[$n]" "p50[$n]" "p99[$n]" < <(measure "$n")
        fi
    done
    throughput+=("$(ratio "${rps[shared]}" "${rps[local]}")")
    latency+=("$(ratio "${p99[shared]}" "${p99[local]}")")
    cost+=("$us") batch+=("$per") rtt50+=("$r50") rtt99+=("$r99")
    printf '%s\n' "$round ${rps[none]} ${p99[none]} ${rps[local]} ${p99[local]} ${rps[shared]} ${p99[shared]} ${throughput[-1]} ${latency[-1]} $us $per $r50 $r99" |
        tr ' ' '\t'
done
echo "median req/s ratio shared/local over $ROUNDS rounds: $(printf '%s\n' "${throughput[@]}" | median)"
echo "median p99 ratio shared/local: $(printf '%s\n' "${latency[@]}" | median)"
echo "median Redis CPU per check (EVALSHA usec_per_call): $(printf '%s\n' "${cost[@]}" | median) us"
echo "median checks per round trip (pipelining): $(printf '%s\n' "${batch[@]}" | median)"
echo "median round trip as the balancer saw it: p50 $(printf '%s\n' "${rtt50[@]}" | median) ms, p99 $(printf '%s\n' "${rtt99[@]}" | median) ms"
