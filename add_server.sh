#!/usr/bin/env bash
# Adds a demo backend, or removes one:
#   ./add_server.sh server4           creates servers/src/bin/server4.rs (a demo server on port
#                                     8080 + 4 = 8084) and appends
#                                     "backend    http://localhost:8084 weight=1" to loadbalancer.conf
#   ./add_server.sh remove server4    deletes that file and that line again
# A running balancer notices the config change within a second.
# Every check runs before anything is written: a refused request changes nothing. When only one
# of the two parts is there (one was undone by hand), adding writes only the missing part and
# removing deletes only the one left, and the script says so.
set -euo pipefail
# [a-z] must mean the 26 lowercase letters, whatever the user's locale.
export LC_ALL=C

BASE_PORT=8080
CONF=loadbalancer.conf
BIN_DIR=servers/src/bin

usage() {
    cat <<USAGE
Usage: ./add_server.sh NAME
       ./add_server.sh remove NAME

Adds the demo backend NAME: lowercase letters then a number without leading zero, e.g. server4 or api12.
Its port is 8080 + the number (server4 -> 8084). Creates $BIN_DIR/NAME.rs and appends its backend
line to $CONF; with "remove", deletes both again. When only one of the two is there, only the
missing one is added, or the remaining one removed.
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
    1:remove) die "remove needs the NAME of the server to remove, e.g. ./add_server.sh remove server4" ;;
    2:remove)
        action=remove
        name=$2
        ;;
    1:*)
        action=add
        name=$1
        ;;
    *)
        echo "add_server.sh: expected NAME or remove NAME, got $# arguments" >&2
        usage >&2
        exit 1
        ;;
esac

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
bin_text() {
    cat <<RUST
//! Demo backend \`$name\` on port $port; all the behaviour lives in the servers library.

fn main() {
    servers::main_for("$name", $port)
}
RUST
}
# What the script wrote, or what still does what it wrote: anything else is someone's own work.
if [[ ! -e $bin_file ]]; then
    bin_state=absent
elif grep -Eq "servers::main_for\\(\"$name\",[[:space:]]*$port[[:space:]]*\\)" "$bin_file"; then
    bin_state=ours
else
    die "$bin_file exists but does not run $name on port $port (changed by hand?): leaving it alone"
fi

default_conf() {
    cat <<'CONF'
# loadbalancer configuration: one setting per line, '#' starts a comment.
# Every key is documented in docs/CONFIGURATION.md; flags given on the command line override this file.
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
elif [[ $action == add ]]; then
    # Adding writes the default file first, so its lines count.
    conf_text=$(default_conf)
else
    conf_text=
fi
# The server's own line: a backend on its port on this machine, whatever the weight.
ours_re="^[[:space:]]*backend[[:space:]]+http://(localhost|127\\.0\\.0\\.1|\\[::1\\]):$port/?([[:space:]]|$)"
# Any backend on the port, local or not.
port_re="^[[:space:]]*backend[[:space:]]+[^[:space:]]*:$port([/[:space:]]|$)"
ours_lines=$(grep -E "$ours_re" <<<"$conf_text" || true)
other_lines=$(grep -E "$port_re" <<<"$conf_text" | grep -Ev "$ours_re" || true)

if [[ $action == remove ]]; then
    if [[ $bin_state == absent && -z $ours_lines ]]; then
        die "nothing to remove: no $bin_file and no backend line for port $port on this machine in $CONF"
    fi
    # Keep "nothing changed" true if the config cannot be written: the file is put back.
    saved_bin=
    if [[ $bin_state == ours ]]; then
        saved_bin=$(cat "$bin_file")
        rm -- "$bin_file" || die "could not delete $bin_file"
    fi
    remove_lines() {
        # A temporary file beside the config, renamed over it: a balancer watching the file
        # never reads half of it. `cp -p` first gives the copy the config's permissions.
        local tmp
        tmp=$(mktemp "$CONF.XXXXXX") || return 1
        if cp -p "$CONF" "$tmp" && { grep -Ev "$ours_re" "$CONF" >"$tmp" || (($? == 1)); } &&
            mv -- "$tmp" "$CONF"; then
            return 0
        fi
        rm -f -- "$tmp"
        return 1
    }
    if [[ -n $ours_lines ]] && ! remove_lines; then
        if [[ -n $saved_bin ]]; then
            printf '%s\n' "$saved_bin" >"$bin_file"
            die "could not write $CONF; put $bin_file back"
        fi
        die "could not write $CONF"
    fi
    case $bin_state in
        ours) echo "deleted $bin_file" ;;
        *) echo "$bin_file was already gone" ;;
    esac
    [[ -n $ours_lines ]] || echo "$CONF had no backend line for port $port on this machine already"
    while IFS= read -r line; do
        [[ -z $line ]] || echo "removed from $CONF: $line"
    done <<<"$ours_lines"
    if [[ -n $other_lines ]]; then
        echo "kept in $CONF (another machine's backend on port $port): $other_lines"
    fi
    echo "a running balancer stops using it within a second (it watches $CONF); stop the server itself if it runs."
    exit 0
fi

# Adding. Another bin with the same number (api4 next to server4), or any other bin already
# passing this port.
for existing in "$BIN_DIR"/*.rs; do
    [[ -e $existing && $existing != "$bin_file" ]] || continue # no bins at all: the glob stayed unexpanded
    other=$(basename "$existing" .rs)
    # Compared as text: both numbers have no leading zero, and text cannot overflow.
    if [[ $other =~ ^[a-z]+([1-9][0-9]*)$ && ${BASH_REMATCH[1]} == "$number" ]]; then
        die "port $port is already used by $other ($existing)"
    fi
    if grep -Eq "main_for\\([^)]*,[[:space:]]*${port}[[:space:]]*\\)" "$existing"; then
        die "port $port is already used by $existing"
    fi
done
# A backend on this port on another machine would be confused with the new server.
if [[ -n $other_lines ]]; then
    die "$CONF already has a backend on port $port: $other_lines"
fi
if [[ $bin_state == ours && -n $ours_lines ]]; then
    die "$name already exists: $bin_file and its backend line in $CONF; nothing to do"
fi

# All checks passed: write what is missing.
if [[ $bin_state == absent ]]; then
    bin_text >"$bin_file"
fi
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
if [[ -z $ours_lines ]] && ! append_backend; then
    if [[ $bin_state == absent ]]; then
        rm -f "$bin_file"
        die "could not write $CONF; removed $bin_file again"
    fi
    die "could not write $CONF"
fi

if [[ $bin_state == absent ]]; then
    echo "created $bin_file ($name on port $port)"
else
    echo "kept $bin_file: it was already there ($name on port $port)"
fi
if [[ -z $ours_lines ]]; then
    echo "appended to $CONF: $line"
else
    echo "kept the backend line already in $CONF: $ours_lines"
fi
echo "start it with:  cargo run -p servers --bin $name"
echo "a running balancer picks it up within a second (it watches $CONF), with slow start."
