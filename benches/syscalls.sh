#!/usr/bin/env bash
# System calls per request of the balancer (and of HAProxy, in the same run) under wrk, in front of
# one nginx backend on loopback, counted by the kernel's syscall tracepoints (perf stat -e
# syscalls:sys_enter_*), which cost little. strace -c -f counts too, but it stops every thread at
# every system call, which changes what it measures: under strace a thread that yields until an
# answer comes yields many more times (strace counted 5.7 sched_yield per request where the
# tracepoints counted 1.5, on the same build).
#
#   benches/syscalls.sh                   # from the repository root
#   C=500 D=5 benches/syscalls.sh
#
# Environment (defaults in brackets): C wrk connections [50], D seconds [5], PORT [18095],
# LB_BIN [target/release/loadbalancer], LOG our access log on|off [on].
# Needs perf (Debian: linux-perf), nginx, haproxy and wrk on PATH, and root (tracepoints).
set -euo pipefail
cd "$(dirname "$0")/.."

C=${C:-50} D=${D:-5} PORT=${PORT:-18095} LOG=${LOG:-on}
LB_BIN=${LB_BIN:-target/release/loadbalancer}

NAME=syscalls.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh
require_tools nginx haproxy wrk perf
ensure_built "$LB_BIN"
start_work syscalls
lb_pid=

backend_port=$((PORT + 1))
start_nginx_backends "$backend_port"
write_haproxy_cfg "$PORT" "$backend_port"
printf 'listen 127.0.0.1:%s\nadmin off\naccess_log %s\nbackend http://127.0.0.1:%s\n' \
    "$PORT" "$LOG" "$backend_port" >"$work/lb.conf"

calls=(futex recvfrom sendto sendmsg recvmsg writev readv read write epoll_ctl epoll_wait
    epoll_pwait epoll_pwait2 sched_yield timerfd_settime poll ppoll setsockopt accept4 close)
events=$(printf 'syscalls:sys_enter_%s,' "${calls[@]}")

# Runs balancer $1 under wrk while perf counts its system calls; prints them per request.
count() {
    case $1 in
    haproxy) haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & ;;
    ours) "$LB_BIN" --config "$work/lb.conf" >"$work/ours.log" 2>&1 & ;;
    esac
    lb_pid=$!
    await_port "$PORT"
    wrk -t1 -c"$C" -d2s "http://127.0.0.1:$PORT/" >/dev/null
    perf stat -e "${events%,}" -p "$lb_pid" -o "$work/perf.out" -- sleep $((D + 1)) >/dev/null 2>&1 &
    local perf_pid=$!
    sleep 0.5
    wrk -t1 -c"$C" -d"${D}s" "http://127.0.0.1:$PORT/" >"$work/wrk.out"
    wait "$perf_pid"
    kill "$lb_pid"
    wait "$lb_pid" 2>/dev/null || true
    lb_pid=
    await_free "$PORT"
    local n
    n=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    echo "$1: $n requests, system calls per request:"
    awk -v n="$n" '$2 ~ /syscalls:sys_enter/ {gsub(",", "", $1); if ($1 > 0) {
            sub("syscalls:sys_enter_", "", $2); t += $1; printf "  %-16s %.3f\n", $2, $1 / n }}
        END {printf "  %-16s %.3f\n", "all", t / n}' "$work/perf.out"
}

echo "wrk -t1 -c$C, ${D}s, one nginx backend; $("$LB_BIN" --version); access log $LOG"
count haproxy
count ours
