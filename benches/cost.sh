#!/usr/bin/env bash
# Cost per request of the balancer next to HAProxy, in front of the same single nginx backend, under
# the same wrk load, on loopback: CPU time (user and system) and context switches of the balancer's
# process per request served, and requests per second. One balancer runs at a time on the same port;
# each round runs every one of them, in rotating order. With BASE_BIN, another build of ours (the one
# before a change) runs in the same rounds too. Prints a row per balancer and round, then each
# balancer's medians over the rounds and the ratios of those medians to HAProxy's. docs/PERFORMANCE.md
# has earlier per-request figures; benches/peers.sh measures throughput and p99.
#
#   benches/cost.sh                       # from the repository root
#   ROUNDS=2 D=3 benches/cost.sh          # a quick look
#   BASE_BIN=/tmp/base/loadbalancer ROUNDS=10 benches/cost.sh    # a change against the build before
#
# Environment (defaults in brackets):
#   C       wrk connections [50]          D     seconds measured per balancer and round [8]
#   W       warm-up seconds before each measurement [2]
#   ROUNDS  rounds [5]                    PORT  balancer port; the backend on PORT+1 [18090]
#   LB_BIN  the balancer binary [target/release/loadbalancer, built with cargo if missing]
#   BASE_BIN  another build to measure in the same rounds [none]
#   LOG     our access log, on or off [on, the default configuration: lines go to a file in the
#           work directory through the log writer thread; HAProxy logs nothing by default]
#
# How it counts, per balancer and round: the balancer's process is sampled right before and right
# after the measured wrk run (the warm-up run is not counted). CPU time is utime+stime of
# /proc/PID/stat, which covers all of its threads, live and exited, in clock ticks (getconf CLK_TCK,
# 100 on Linux: 10 ms). Their sum is the scheduler's precise run time, truncated to a tick; the
# kernel splits it between user and system in proportion to its timer-tick samples, so the split is
# an estimate (noisier where a run has few user ticks) and the sum the firm figure. The `ticks`
# column shows how many ticks a run had: per-request figures are good to about two ticks divided by
# the requests (a 5 s run has a few hundred, under 1 %). Context switches are the sum of
# voluntary_ctxt_switches and nonvoluntary_ctxt_switches over /proc/PID/task/*/status
# (/proc/PID/status has the main thread's only); a thread that exits between the two samples takes
# its switches with it. HAProxy keeps a fixed set of threads; ours also starts a short-lived thread
# for each health check (one every 2 s here), whose few switches are lost and whose CPU time is not.
# Requests are those wrk reports as completed: the up to C requests still in flight when wrk stops
# cost CPU but are not counted, a bias of at most C/requests. The cost per request also depends on
# the load (more requests per wake-up at a higher rate), so compare runs at the same C and mind the
# req/s beside them.
#
# Installs nothing: it needs nginx, haproxy and wrk on PATH (Debian: apt-get install nginx haproxy
# wrk). Everything runs in this script's session: backends started in a session of their own get a
# CPU share of their own from the kernel's autogroup scheduler, which skews the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

C=${C:-50} D=${D:-8} W=${W:-2} ROUNDS=${ROUNDS:-5} PORT=${PORT:-18090} LOG=${LOG:-on}
LB_BIN=${LB_BIN:-target/release/loadbalancer}
BASE_BIN=${BASE_BIN:-}

NAME=cost.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh
require_tools nginx haproxy wrk
ensure_built "$LB_BIN"
if [[ -n $BASE_BIN && ! -x $BASE_BIN ]]; then
    echo "cost.sh: BASE_BIN $BASE_BIN is not an executable" >&2
    exit 2
fi
TICK=$(getconf CLK_TCK)

start_work cost
lb_pid=

# One nginx backend and HAProxy in front of it, as peers.sh runs them (see lib.sh).
backend_port=$((PORT + 1))
start_nginx_backends "$backend_port"
write_haproxy_cfg "$PORT" "$backend_port"

cat >"$work/lb.conf" <<EOF
listen     127.0.0.1:$PORT
admin      off
access_log $LOG
health     path=/health interval=2s timeout=1s rise=2 fall=3
backend    http://127.0.0.1:$backend_port
EOF
for bin in "$LB_BIN" ${BASE_BIN:+"$BASE_BIN"}; do
    if ! "$bin" --check --config "$work/lb.conf" >/dev/null 2>"$work/check.err"; then
        echo "cost.sh: $bin refuses the configuration:" >&2
        cat "$work/check.err" >&2
        exit 2
    fi
done

# Prints "utime stime switches" of process $1: its CPU ticks (all threads) and the context switches of
# the threads it has now.
sample() {
    local stat fields
    read -r stat <"/proc/$1/stat"
    read -ra fields <<<"${stat##*) }" # fields[0] is field 3 (state): utime is 14, stime 15
    printf '%s %s ' "${fields[11]}" "${fields[12]}"
    cat "/proc/$1/task/"*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {printf "%d\n", s}'
}

# Runs balancer $1 (haproxy, ours or base) on $PORT under wrk and sets `result` to "requests req/s
# user_us sys_us cpu_us switches ticks", the last five per request but ticks.
measure() {
    local bin u0 s0 x0 u1 s1 x1
    case $1 in
    haproxy) haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & ;;
    ours | base)
        bin=$LB_BIN
        [[ $1 == base ]] && bin=$BASE_BIN
        "$bin" --config "$work/lb.conf" >"$work/$1.log" 2>&1 &
        ;;
    esac
    lb_pid=$!
    await_port "$PORT"
    wrk -t1 -c"$C" -d"${W}s" "http://127.0.0.1:$PORT/" >/dev/null
    read -r u0 s0 x0 < <(sample "$lb_pid")
    wrk -t1 -c"$C" -d"${D}s" "http://127.0.0.1:$PORT/" >"$work/wrk.out"
    read -r u1 s1 x1 < <(sample "$lb_pid")
    kill "$lb_pid"
    wait "$lb_pid" 2>/dev/null || true
    lb_pid=
    await_free "$PORT"
    result=$(awk -v name="$1" -v tick="$TICK" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v x=$((x1 - x0)) '
        /requests in/ {n = $1} /Requests\/sec/ {rps = $2}
        /Non-2xx|Socket errors/ {bad = bad " " $0}
        END {
            if (bad != "") print "cost.sh: " name ": wrk reported errors:" bad > "/dev/stderr"
            if (n == 0) { print "cost.sh: " name ": wrk completed no request" > "/dev/stderr"; n = 1 }
            us = 1e6 / tick / n
            printf "%d %d %.2f %.2f %.2f %.3f %d\n", n, rps, u * us, s * us, (u + s) * us, x / n, u + s
        }' "$work/wrk.out")
}

# The median and range of the numbers on standard input.
median() {
    sort -g | awk '{r[NR] = $1}
        END {
            m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
            printf "%g (range %g to %g)", m, r[1], r[NR]
        }'
}

names=(haproxy ours)
[[ -n $BASE_BIN ]] && names+=(base)
metrics=(cpu_us user_us sys_us switches rps)
echo "wrk -t1 -c$C, ${D}s per balancer after ${W}s warm-up, $ROUNDS rounds, one nginx backend;" \
    "$("$LB_BIN" --version)${BASE_BIN:+, base $("$BASE_BIN" --version)}; $(haproxy -v | head -1 | cut -d' ' -f1-3);" \
    "CLK_TCK $TICK; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "round balancer requests req/s user_us/req sys_us/req cpu_us/req switches/req ticks" | tr ' ' '\t'
declare -A values # "name metric" -> the rounds' figures, one a line
for round in $(seq "$ROUNDS"); do
    # Rotate the order, so that drift in the machine's load favours none of them.
    for i in "${!names[@]}"; do
        n=${names[$(((i + round) % ${#names[@]}))]}
        measure "$n"
        read -r requests rps user_us sys_us cpu_us switches ticks <<<"$result"
        echo "$round $n $requests $rps $user_us $sys_us $cpu_us $switches $ticks" | tr ' ' '\t'
        for m in "${metrics[@]}"; do values["$n $m"]+="${!m}"$'\n'; done
    done
done

echo "medians over $ROUNDS rounds (per request but req/s; CPU = user + system):"
declare -A med
for n in "${names[@]}"; do
    line="  $n:"
    for m in "${metrics[@]}"; do
        summary=$(printf '%s' "${values["$n $m"]}" | median)
        med["$n $m"]=${summary%% *}
        line+=" $m ${summary}"
    done
    echo "$line"
done
pairs=("ours haproxy")
[[ -n $BASE_BIN ]] && pairs+=("base haproxy" "ours base")
for pair in "${pairs[@]}"; do
    read -r a b <<<"$pair"
    line="ratio of the medians $a/$b:"
    for m in "${metrics[@]}"; do line+=" $m $(ratio "${med["$a $m"]}" "${med["$b $m"]}")"; done
    echo "$line"
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
