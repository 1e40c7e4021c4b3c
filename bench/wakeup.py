"""Why the batch, bot and predictor slices are set up as they are: wake-up latency of an
always-on slice while two busy loops run in a batch slice, setting by setting.

Two processes in a slice like the bot's (weight 1000) play ping-pong over a socket pair every
20 ms, the way the bot and predictor wake for a bar. The round trip is measured alone, then with
two busy loops in the batch slice. Real cgroups (v1 or v2), one fresh tree `bdt-bench-<hex>`
under this process's own cgroup, its slices updated row by row and the tree removed at the
end; every child is stopped by PID.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import socket
import subprocess
import sys
import time
from typing import Any

from bench import common
from shared.bus.service import percentiles
from shared.resources.allocation import Slice, load_allocation
from shared.resources.cgroup import CgroupBackend, NullBackend
from shared.resources.cgroup_open import open_backend

PONG = """
import socket, sys
s = socket.socket(fileno=int(sys.argv[1]))
while data := s.recv(64):
    s.send(data)
"""
PING = """
import json, socket, sys, time
s = socket.socket(fileno=int(sys.argv[1]))
sys.stdin.readline()                    # placed in its slice: go
rtt = []
for _ in range(int(sys.argv[2])):
    time.sleep(0.02)
    t = time.perf_counter()
    s.send(b"x")
    s.recv(64)
    rtt.append((time.perf_counter() - t) * 1e6)
print(json.dumps(rtt), flush=True)
"""


def settings() -> dict[str, tuple[Slice, Slice]]:
    """(fast slice, batch slice) per row: batch's settings one by one with the bot's row
    minus its cpuset, then the table as it is (bot kept off batch's CPU too)."""
    table = load_allocation()
    bot = dataclasses.replace(table.slice("bot"), name="fast")
    free_bot = dataclasses.replace(bot, cpuset=None)
    batch = table.slice("batch")
    base = Slice("batch", batch.memory_max, cpu_weight=batch.cpu_weight)
    quota = dataclasses.replace(base, cpu_quota=batch.cpu_quota)
    return {
        "batch: weight 10": (free_bot, base),
        "+ 0.5-core quota": (free_bot, quota),
        "+ cpu_idle": (free_bot, dataclasses.replace(quota, cpu_idle=True)),
        "+ cpuset last": (free_bot, batch),
        "+ bot: cpuset all-but-last": (bot, batch),
    }


def _ping(backend: CgroupBackend, n: int, procs: list[subprocess.Popen[bytes]]) -> list[float]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        pong = subprocess.Popen([sys.executable, "-c", PONG, str(theirs.fileno())],
                                pass_fds=[theirs.fileno()])
        procs.append(pong)
        backend.place("fast", pong.pid)
        ping = subprocess.Popen([sys.executable, "-c", PING, str(ours.fileno()), str(n)],
                                pass_fds=[ours.fileno()], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        procs.append(ping)
        backend.place("fast", ping.pid)
        out, _ = ping.communicate(b"go\n", timeout=n * 0.1 + 30)
    return json.loads(out)


def _one(backend: CgroupBackend, name: str, fast: Slice, batch: Slice, n: int) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend.apply(fast)                       # updated in place from the previous row
        backend.apply(batch)
        alone = _ping(backend, n, procs)
        for _ in range(2):
            hog = subprocess.Popen([sys.executable, "-c", common.HOG])
            procs.append(hog)
            backend.place("batch", hog.pid)
        time.sleep(0.5)
        busy = _ping(backend, n, procs)
        return {"setting": name, "alone": percentiles(alone),
                "batch_busy": percentiles(busy)}
    finally:
        for p in procs:
            common.stop(p)


def _remove(backend: CgroupBackend) -> None:
    deadline = time.monotonic() + 5
    while not backend.remove_tree():
        if time.monotonic() > deadline:
            print(f"  warning: could not remove the cgroup tree {backend.tree_name}",
                  file=sys.stderr)
            return
        time.sleep(0.1)


def bench(quick: bool) -> dict[str, Any]:
    n = 100 if quick else 500
    backend = open_backend(f"bdt-bench-{secrets.token_hex(4)}")
    if isinstance(backend, NullBackend):
        print(f"  skipped: bench wakeup needs writable cgroups ({backend.reason})")
        return {"skipped": backend.reason}
    try:
        backend.apply_parent(load_allocation().parent)
        results = [_one(backend, name, fast, batch, n)
                   for name, (fast, batch) in settings().items()]
    finally:
        _remove(backend)
    rows = [[r["setting"], r["alone"]["p50_us"], r["alone"]["p99_us"],
             r["batch_busy"]["p50_us"], r["batch_busy"]["p99_us"], r["batch_busy"]["max_us"]]
            for r in results]
    common.print_table(f"round trip between two processes of a weight-1000 slice, every 20 ms, "
                       f"{n} samples (µs)",
                       ["setting", "alone p50", "p99", "2 busy loops in batch p50", "p99",
                        "max"], rows)
    return {"samples": n, "results": results}
