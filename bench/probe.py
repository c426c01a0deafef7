#!/usr/bin/env python3
"""The benchmark's unmodified client, run plain or under `hook-run` (the same script either way).

It times itself, so the hook's start-up never enters these figures. Output: one JSON object on stdout.

  probe.py latency HOST PORT N [IPC]
                                  N x (blocking connect + 1-byte write + 1-byte read + close) against an
                                  echo server; HOST is resolved once. {"samples_us": [...]} (after 5 %
                                  warm-up iterations, which are dropped). With IPC, the redirector's
                                  socket, each connection is claimed there after connect() (a
                                  notification, no reply), as the hook does (PROTOCOL.md §2), so an unhooked probe
                                  is admitted the same way. With UNDERPASS_PROBE_MARKS=1 in the
                                  environment it adds "marks_ms": per sample, CLOCK_MONOTONIC in ms at the
                                  start, after connect(), after the claim and once the byte is back (the
                                  daemons' UNDERPASS_OPEN_TRACE clock, for bench/timeline.ts).
  probe.py latency-ab N HOST PORT IPC HOST PORT IPC
                                  The same against two tunnels (two builds' chains, say), taking turns
                                  connect by connect, so that load which comes and goes falls on both
                                  alike. {"samples_us": [[first's...], [second's...]]}
  probe.py ordinary PORT N        N x getaddrinfo('localhost', PORT) and N x connect+close to
                                  127.0.0.1:PORT: the ordinary-name path the hook must leave alone.
                                  {"getaddrinfo_us": per call, "connect_us": per call}
"""

import json
import os
import socket
import sys
import time


def claim(ipc, s, address, port):
    local = s.getsockname()
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(ipc)
    request = {
        'type': 'claim',
        'data': {'address': address, 'port': port, 'localAddress': local[0], 'localPort': local[1]},
    }
    u.sendall(json.dumps(request).encode() + b'\f')
    u.close()  # as the hook: a claim is a notification, with no reply


def latency(host, port, n, ipc=None):
    addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    warm = max(10, n // 20)
    samples = []
    marks = [] if os.environ.get('UNDERPASS_PROBE_MARKS') == '1' else None
    clock = time.monotonic_ns
    for i in range(n + warm):
        t0 = time.perf_counter_ns()
        m0 = clock()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.connect(addr)  # blocking, no timeout: the path a hooked blocking connect takes
        m1 = clock()
        if ipc is not None:
            claim(ipc, s, addr[0], addr[1])
        m2 = clock()
        s.sendall(b'x')
        if s.recv(1) != b'x':
            raise SystemExit('probe: echo answered wrongly')
        t1 = time.perf_counter_ns()
        m3 = clock()
        s.close()
        if i >= warm:
            samples.append((t1 - t0) / 1000)
            if marks is not None:
                marks.append([m / 1e6 for m in (m0, m1, m2, m3)])
    out = {'samples_us': samples, 'address': addr[0]}
    if marks is not None:
        out['marks_ms'] = marks
    return out


def latency_ab(n, targets):
    addrs = [(socket.getaddrinfo(h, p, socket.AF_INET, socket.SOCK_STREAM)[0][4], ipc) for h, p, ipc in targets]
    warm = max(10, n // 20)
    samples = [[] for _ in addrs]
    for i in range(n + warm):
        for j, (addr, ipc) in enumerate(addrs):
            t0 = time.perf_counter_ns()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect(addr)
            claim(ipc, s, addr[0], addr[1])
            s.sendall(b'x')
            if s.recv(1) != b'x':
                raise SystemExit('probe: echo answered wrongly')
            t1 = time.perf_counter_ns()
            s.close()
            if i >= warm:
                samples[j].append((t1 - t0) / 1000)
    return {'samples_us': samples}


def ordinary(port, n):
    # Warm the resolver (nsswitch, /etc/hosts parsing) before timing.
    for _ in range(50):
        socket.getaddrinfo('localhost', port, socket.AF_INET, socket.SOCK_STREAM)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        socket.getaddrinfo('localhost', port, socket.AF_INET, socket.SOCK_STREAM)
    t1 = time.perf_counter_ns()
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(('127.0.0.1', port))
        s.close()
    t2 = time.perf_counter_ns()
    return {'getaddrinfo_us': (t1 - t0) / n / 1000, 'connect_us': (t2 - t1) / n / 1000}


def main(argv):
    if len(argv) in (4, 5) and argv[0] == 'latency':
        out = latency(argv[1], int(argv[2]), int(argv[3]), argv[4] if len(argv) == 5 else None)
    elif len(argv) == 8 and argv[0] == 'latency-ab':
        out = latency_ab(int(argv[1]), [(argv[2], int(argv[3]), argv[4]), (argv[5], int(argv[6]), argv[7])])
    elif len(argv) == 3 and argv[0] == 'ordinary':
        out = ordinary(int(argv[1]), int(argv[2]))
    else:
        raise SystemExit(__doc__)
    sys.stdout.write(json.dumps(out) + '\n')


if __name__ == '__main__':
    main(sys.argv[1:])
