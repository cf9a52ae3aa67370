#!/usr/bin/env bash
# Throughput and p99 latency of the balancer next to HAProxy, in front of the same three nginx
# backends, under the same wrk load, on loopback. One balancer runs at a time on the same port; each
# round runs every one of them, in rotating order, and the ratios to HAProxy are taken within the
# round, because on a shared machine the absolute rate drifts from minute to minute. With BASE_BIN,
# another build of ours (the one before a change) runs in the same rounds too. Prints a row per
# round and the median of each ratio. See docs/PERFORMANCE.md for the method and the history.
#
#   benches/peers.sh                      # from the repository root
#   ROUNDS=2 D=3 benches/peers.sh         # a quick look
#   BASE_BIN=/tmp/old/loadbalancer ROUNDS=10 benches/peers.sh    # a change against the build before
#   C=500 benches/peers.sh                # many connections: compare the p99s
#
# Environment (defaults in brackets):
#   C       wrk connections [50]          D     seconds measured per balancer and round [8]
#   W       warm-up seconds before each measurement [2]
#   ROUNDS  rounds [10]                   PORT  balancer port; backends on PORT+1..PORT+3 [18080]
#   LB_BIN  the balancer binary [target/release/loadbalancer, built with cargo if missing]
#   BASE_BIN  another build to measure in the same rounds [none]
#   LOG     our access log, on or off [on, the default configuration: lines go to a file in the
#           work directory through the log writer thread; HAProxy logs nothing by default]
#
# Installs nothing: it needs nginx, haproxy and wrk on PATH (Debian: apt-get install nginx haproxy
# wrk). Everything runs in this script's session: backends started in a session of their own get a
# CPU share of their own from the kernel's autogroup scheduler, which skews the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

C=${C:-50} D=${D:-8} W=${W:-2} ROUNDS=${ROUNDS:-10} PORT=${PORT:-18080} LOG=${LOG:-on}
LB_BIN=${LB_BIN:-target/release/loadbalancer}
BASE_BIN=${BASE_BIN:-}

NAME=peers.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh
require_tools nginx haproxy wrk
ensure_built "$LB_BIN"

start_work peers

# Three nginx backends (see lib.sh), HAProxy in front of them, and ours.
backend_ports=("$((PORT + 1))" "$((PORT + 2))" "$((PORT + 3))")
start_nginx_backends "${backend_ports[@]}"
write_haproxy_cfg "$PORT" "${backend_ports[@]}"

{
    for p in "${backend_ports[@]}"; do echo "backend http://127.0.0.1:$p"; done
} >"$work/lb.conf"

# Runs balancer $1 (haproxy, ours or base) on $PORT under wrk; prints "req/s p50 p99", the
# latencies in milliseconds.
measure() {
    local pid bin
    case $1 in
    haproxy) haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & ;;
    ours | base)
        bin=$LB_BIN
        [[ $1 == base ]] && bin=$BASE_BIN
        "$bin" --config "$work/lb.conf" --listen "127.0.0.1:$PORT" --admin off \
            --access-log "$LOG" >"$work/$1.log" 2>&1 &
        ;;
    esac
    pid=$!
    await_port "$PORT"
    wrk -t1 -c"$C" -d"${W}s" "http://127.0.0.1:$PORT/" >/dev/null
    wrk -t1 -c"$C" -d"${D}s" --latency "http://127.0.0.1:$PORT/" >"$work/wrk.out"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    await_free "$PORT"
    wrk_summary "$work/wrk.out" "$1"
}

names=(haproxy ours)
[[ -n $BASE_BIN ]] && names+=(base)
echo "wrk -t1 -c$C, ${D}s per balancer after ${W}s warm-up, $ROUNDS rounds; $("$LB_BIN" --version)"
header="round order"
for n in "${names[@]}"; do header+=" ${n}_rps ${n}_p50 ${n}_p99"; done
header+=" ours/haproxy p99_ours/haproxy"
[[ -n $BASE_BIN ]] && header+=" base/haproxy ours/base"
echo "$header" | tr ' ' '\t'
declare -A rps p50 p99
throughput=() latency=() base_ratio=() change=()
for round in $(seq "$ROUNDS"); do
    # Rotate the order, so that drift in the machine's load favours none of them.
    order=()
    for i in "${!names[@]}"; do order+=("${names[$(((i + round) % ${#names[@]}))]}"); done
    for n in "${order[@]}"; do
        read -r "rps[$n]" "p50[$n]" "p99[$n]" < <(measure "$n")
    done
    row="$round $(IFS=,; echo "${order[*]}")"
    for n in "${names[@]}"; do row+=" ${rps[$n]} ${p50[$n]} ${p99[$n]}"; done
    throughput+=("$(ratio "${rps[ours]}" "${rps[haproxy]}")")
    latency+=("$(ratio "${p99[ours]}" "${p99[haproxy]}")")
    row+=" ${throughput[-1]} ${latency[-1]}"
    if [[ -n $BASE_BIN ]]; then
        base_ratio+=("$(ratio "${rps[base]}" "${rps[haproxy]}")")
        change+=("$(ratio "${rps[ours]}" "${rps[base]}")")
        row+=" ${base_ratio[-1]} ${change[-1]}"
    fi
    echo "$row" | tr ' ' '\t'
done
echo "median throughput ratio loadbalancer/HAProxy over $ROUNDS rounds: $(printf '%s\n' "${throughput[@]}" | median)"
echo "median p99 ratio loadbalancer/HAProxy: $(printf '%s\n' "${latency[@]}" | median)"
if [[ -n $BASE_BIN ]]; then
    echo "median throughput ratio base/HAProxy: $(printf '%s\n' "${base_ratio[@]}" | median)"
    echo "median throughput ratio loadbalancer/base: $(printf '%s\n' "${change[@]}" | median)"
fi
