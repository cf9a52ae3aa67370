#!/usr/bin/env bash
# What the access log costs: throughput of the balancer with `access_log off`, with it on to stderr
# (redirected to a file, as under systemd or docker the log goes to a pipe that is read), and on to
# a file (`path=`), in front of the same three nginx backends under the same wrk load. Each round
# runs every variant in turn, in rotating order, and takes the ratios to `off` within the round
# (the machine is shared and its absolute rate drifts); the medians are printed at the end. Beside
# the rate, the CPU time the balancer's process used per request (utime+stime from /proc/PID/stat
# over the measured run, as benches/cost.sh counts it). With BASE_BIN, another build (the one
# before a change) runs its own off and on in the same rounds.
#
#   benches/access_log.sh                                   # from the repository root
#   BASE_BIN=/tmp/old/loadbalancer ROUNDS=7 benches/access_log.sh
#
# Environment (defaults in brackets):
#   C       wrk connections [50]          D     seconds measured per variant and round [5]
#   W       warm-up seconds [1]           ROUNDS  rounds [5]
#   PORT    balancer port; backends on PORT+1..PORT+3 [18080]
#   LB_BIN  the balancer binary [target/release/loadbalancer, built with cargo if missing]
#   BASE_BIN  another build to measure in the same rounds [none]
#
# Needs nginx and wrk on PATH (Debian: apt-get install nginx wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

C=${C:-50} D=${D:-5} W=${W:-1} ROUNDS=${ROUNDS:-5} PORT=${PORT:-18080}
LB_BIN=${LB_BIN:-target/release/loadbalancer}
BASE_BIN=${BASE_BIN:-}

NAME=access_log.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh
require_tools nginx wrk
ensure_built "$LB_BIN"

start_work access-log
backend_ports=("$((PORT + 1))" "$((PORT + 2))" "$((PORT + 3))")
start_nginx_backends "${backend_ports[@]}"

variants=(off stderr file)
[[ -n $BASE_BIN ]] && variants+=(base-off base-stderr)

# CPU clock ticks (user + system) the process $1 has used so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# Runs variant $1 on $PORT under wrk; prints its requests per second and CPU microseconds per
# request.
measure() {
    local bin=$LB_BIN log="access_log off"
    [[ $1 == base-* ]] && bin=$BASE_BIN
    case $1 in
    *stderr) log="access_log on" ;;
    file) log="access_log on path=$work/access.log" ;;
    esac
    {
        for p in "${backend_ports[@]}"; do echo "backend http://127.0.0.1:$p"; done
        echo "$log"
    } >"$work/lb.conf"
    rm -f "$work/access.log"
    RUST_LOG=info "$bin" --config "$work/lb.conf" --listen "127.0.0.1:$PORT" --admin off \
        >/dev/null 2>"$work/$1.stderr" &
    lb_pid=$!
    await_port "$PORT"
    wrk -t1 -c"$C" -d"${W}s" "http://127.0.0.1:$PORT/" >/dev/null
    local before after
    before=$(cpu_ticks "$lb_pid")
    wrk -t1 -c"$C" -d"${D}s" "http://127.0.0.1:$PORT/" >"$work/wrk.out"
    after=$(cpu_ticks "$lb_pid")
    kill "$lb_pid"
    wait "$lb_pid" 2>/dev/null || true
    lb_pid=
    await_free "$PORT"
    awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        /requests in/ {n = $1} /Requests\/sec/ {rps = $2}
        END {printf "%d %.1f\n", rps, ticks / hz * 1e6 / n}' "$work/wrk.out"
}

echo "C=$C, ${D}s per variant, $ROUNDS rounds: requests/s (ratio to the same build's off)" \
    "and CPU µs per request"
printf '%-6s' round
for v in "${variants[@]}"; do printf ' %24s' "$v"; done
echo
: >"$work/ratios"
for round in $(seq "$ROUNDS"); do
    declare -A rps=() cpu=()
    n=${#variants[@]}
    for i in $(seq 0 $((n - 1))); do
        v=${variants[$(((i + round) % n))]}
        read -r "rps[$v]" "cpu[$v]" < <(measure "$v")
    done
    printf '%-6s' "$round"
    for v in "${variants[@]}"; do
        off=off
        [[ $v == base-* ]] && off=base-off
        ratio=$(awk -v a="${rps[$v]}" -v b="${rps[$off]}" 'BEGIN {printf "%.3f", a / b}')
        printf ' %7d (%5s) %6sµs' "${rps[$v]}" "$ratio" "${cpu[$v]}"
        echo "$v $ratio ${cpu[$v]}" >>"$work/ratios"
    done
    echo
done
# Prints the median of column $2 of the ratios for variant $1, with the range.
median() {
    awk -v v="$1" -v c="$2" '$1 == v {print $c}' "$work/ratios" | sort -n |
        awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
            printf "%.3f (%s..%s)", m, a[1], a[NR]}'
}
echo "medians: throughput ratio to off, CPU µs per request"
for v in "${variants[@]}"; do
    printf '  %-12s %-24s %s\n' "$v" "$(median "$v" 2)" "$(median "$v" 3)"
done
