#!/usr/bin/env bash
# Adds a demo backend: ./add_server.sh server4
#   - creates servers/src/bin/server4.rs (a demo server on port 8080 + 4 = 8084), and
#   - appends "backend    http://localhost:8084 weight=1" to loadbalancer.conf,
# so the balancer uses it (a running one notices the file change within a second).
# Every check runs before anything is written: a refused name changes nothing.
set -euo pipefail
# [a-z] must mean the 26 lowercase letters, whatever the user's locale.
export LC_ALL=C

BASE_PORT=8080
CONF=loadbalancer.conf
BIN_DIR=servers/src/bin

usage() {
    cat <<USAGE
Usage: ./add_server.sh NAME

Adds the demo backend NAME: lowercase letters then a number without leading zero, e.g. server4 or api12.
Its port is 8080 + the number (server4 -> 8084). Creates $BIN_DIR/NAME.rs and appends
its backend line to $CONF.
USAGE
}

die() {
    echo "add_server.sh: $*" >&2
    exit 1
}

case "$#:${1:-}" in
    1:-h | 1:--help)
        usage
        exit 0
        ;;
    1:*) ;;
    *)
        echo "add_server.sh: expected exactly one NAME, got $# arguments" >&2
        usage >&2
        exit 1
        ;;
esac
name=$1

# Paths below are relative to the repository root, wherever the script is run from.
cd "$(dirname "$0")"
[[ -d $BIN_DIR ]] || die "$BIN_DIR not found next to add_server.sh (is the script in the repository root?)"

[[ $name =~ ^[a-z]+([1-9][0-9]*)$ ]] ||
    die "invalid name '$name': use lowercase letters then a number from 1 up without leading zeros, e.g. server4 or api12"
number=${BASH_REMATCH[1]}
# The digit count is checked first: bash arithmetic on a 20-digit number would overflow.
if ((${#number} > 5)); then
    port="$BASE_PORT + $number"
else
    port=$((BASE_PORT + number))
fi
if ((${#number} > 5 || port > 65535)); then
    die "'$name' would listen on port $port, outside $((BASE_PORT + 1))..65535: use a number from 1 to $((65535 - BASE_PORT))"
fi

bin_file=$BIN_DIR/$name.rs
[[ ! -e $bin_file ]] || die "$bin_file already exists"

# Another bin with the same number (api4 next to server4), or any bin already passing this port.
for existing in "$BIN_DIR"/*.rs; do
    [[ -e $existing ]] || continue # no bins at all: the glob stayed unexpanded
    other=$(basename "$existing" .rs)
    # Compared as text: both numbers have no leading zero, and text cannot overflow.
    if [[ $other =~ ^[a-z]+([1-9][0-9]*)$ && ${BASH_REMATCH[1]} == "$number" ]]; then
        die "port $port is already used by $other ($existing)"
    fi
    if grep -Eq "main_for\\([^)]*,[[:space:]]*${port}[[:space:]]*\\)" "$existing"; then
        die "port $port is already used by $existing"
    fi
done

default_conf() {
    cat <<'CONF'
# loadbalancer configuration: one setting per line, '#' starts a comment.
# Every key is documented in README.md; flags given on the command line override this file.
listen     0.0.0.0:8080
admin      127.0.0.1:9090
workers    64
queue      1024
timeouts   connect=2s response=30s
access_log on

# Backends: ./add_server.sh appends new ones here.
backend    http://localhost:8081 weight=1
backend    http://localhost:8082 weight=1
backend    http://localhost:8083 weight=1
CONF
}

if [[ -e $CONF ]]; then
    conf_text=$(cat "$CONF")
else
    conf_text=$(default_conf)
fi
# Any host: a backend on this port, local or not, would be confused with the new server.
if grep -Eq "^[[:space:]]*backend[[:space:]]+[^[:space:]]*:$port([/[:space:]]|$)" <<<"$conf_text"; then
    die "$CONF already has a backend on port $port"
fi

# All checks passed: write.
cat >"$bin_file" <<RUST
//! Demo backend \`$name\` on port $port; all the behaviour lives in the servers library.

fn main() {
    servers::main_for("$name", $port)
}
RUST
line="backend    http://localhost:$port weight=1"
append_backend() {
    if [[ ! -e $CONF ]]; then
        default_conf >"$CONF" && echo "created $CONF with the default settings"
    elif [[ -s $CONF && -n $(tail -c 1 "$CONF") ]]; then
        # The last line has no newline: without one, the backend would be glued onto it.
        echo >>"$CONF"
    fi && echo "$line" >>"$CONF"
}
# Keep "nothing changed" true even if the config cannot be written (read-only file, full disk).
if ! append_backend; then
    rm -f "$bin_file"
    die "could not write $CONF; removed $bin_file again"
fi

echo "created $bin_file ($name on port $port)"
echo "appended to $CONF: $line"
echo "start it with:  cargo run -p servers --bin $name"
echo "a running balancer picks it up within a second (it watches loadbalancer.conf), with slow start."
