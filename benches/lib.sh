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

# Waits until nothing accepts connections on 127.0.0.1:$1 any more (10 s at most).
await_free() {
    local tries
    for tries in $(seq 200); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
}
