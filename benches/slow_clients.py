#!/usr/bin/env python3
"""Slow clients against a running balancer, and a normal client beside them.

Opens UPLOADS "slow POST" connections (Content-Length: 100000, then one byte a second) and
READERS "slow read" connections (a small receive buffer; they ask for BIG_PATH and read nothing),
then makes sequential GETs of NORMAL_PATH on new connections for SECONDS and prints their
latency (p50, p99, max) and errors. With --admin it also samples /status (workers busy, slow
connections, bytes buffered); with --pid, the balancer's memory (VmRSS, VmHWM).

    python3 benches/slow_clients.py 127.0.0.1:8080 --uploads 100 --readers 100 --big /bytes/4194304
    benches/slow_clients.sh            # the whole benchmark: builds, starts everything, 1 000 of each

Only for loopback addresses: it refuses any other target. Standard library only.
"""

import argparse
import json
import socket
import statistics
import sys
import threading
import time
import urllib.request


def connect(host, port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect, so the window the client offers is small from the start.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((host, port))
    return s


def get(host, port, path):
    """One GET on a new connection; returns (status, seconds)."""
    started = time.monotonic()
    with connect(host, port) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", help="the balancer, host:port (loopback only)")
    p.add_argument("--uploads", type=int, default=100)
    p.add_argument("--readers", type=int, default=100)
    p.add_argument("--big", default="/bytes/4194304", help="what the readers ask for")
    p.add_argument("--normal", default="/", help="what the normal client asks for")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--admin", help="the admin listener, host:port, to sample /status")
    p.add_argument("--pid", type=int, help="the balancer's pid, to read its memory")
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    if not host.startswith("127.") and host != "localhost":
        sys.exit("slow_clients.py: only loopback targets (127.0.0.0/8, localhost)")

    uploads = []
    for _ in range(a.uploads):
        s = connect(host, port)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\nx")
        uploads.append(s)
    def front():
        with urllib.request.urlopen(f"http://{a.admin}/status", timeout=2) as r:
            return json.load(r).get("front", {})

    # Readers in batches: each 4 MiB answer takes a worker a moment to fetch from the backend, and
    # a thousand at once would wait longer than `timeouts queue=` (503) before the attack is even
    # in place. With --admin, each batch waits until the balancer holds the one before.
    readers = []
    started = time.monotonic()
    while len(readers) < a.readers:
        for _ in range(min(50, a.readers - len(readers))):
            s = connect(host, port, rcvbuf=4096)
            s.sendall(f"GET {a.big} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            readers.append(s)
        while a.admin and time.monotonic() - started < 120:
            try:
                f = front()
                if f.get("answers_flushing", len(readers)) >= len(readers):
                    break  # held, or a build without these fields
            except OSError:
                pass
            time.sleep(0.1)
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in uploads:
                try:
                    s.send(b"x")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    print(f"open: {len(uploads)} slow uploads, {len(readers)} stalled readers", flush=True)
    held = front() if a.admin else {}
    print(f"in place after {time.monotonic() - started:.1f} s: {held}", flush=True)

    samples = []

    def sample():
        while not stop.wait(0.5):
            row = {}
            if a.admin:
                try:
                    with urllib.request.urlopen(f"http://{a.admin}/status", timeout=2) as r:
                        s = json.load(r)
                    row.update(s.get("front", {}))
                    row.update(s.get("buffers", {}))
                except OSError:
                    pass
            if a.pid:
                row["rss_kib"] = proc_kib(a.pid, "VmRSS:")
            samples.append(row)

    threading.Thread(target=sample, daemon=True).start()
    times, errors = [], 0
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        try:
            status, took = get(host, port, a.normal)
        except OSError:
            status, took = 0, 0.0
        if status != 200:
            errors += 1
        else:
            times.append(took)
    stop.set()
    times.sort()
    if times:
        p50 = statistics.median(times) * 1000
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
        print(
            f"normal GETs: {len(times)} ok, {errors} errors; "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {times[-1] * 1000:.1f} ms"
        )
    else:
        print(f"normal GETs: none succeeded, {errors} errors")
    if samples:
        def peak(key):
            return max((s.get(key, 0) for s in samples), default=0)

        print(
            f"during: workers busy at most {peak('workers_busy')}, "
            f"uploads buffering {peak('bodies_buffering')}, answers flushing {peak('answers_flushing')}, "
            f"memory {peak('memory_bytes') >> 20} MiB, files {peak('file_bytes') >> 20} MiB"
            + (f", RSS at most {peak('rss_kib') >> 10} MiB" if a.pid else "")
        )
    if a.pid:
        print(f"balancer VmHWM {proc_kib(a.pid, 'VmHWM:') >> 10} MiB")
    for s in uploads + readers:
        s.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
