"""What every benchmark shares: timing, tables, JSON results, pinning, child processes by PID."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import stop_process as stop  # noqa: F401 - SIGTERM, then SIGKILL; used here and by pipeline

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench-results"


# --- timing --------------------------------------------------------------------------------
class Timer:
    """Per-call perf_counter_ns samples of ``fn``, gathered over blocks of calls; meanwhile the
    CPU time (user + system, all threads) of each process in ``pids``, and of everything else
    on the machine (``foreign``: other users' load, which disturbs the figures)."""

    def __init__(self, fn: Callable[[], object], pids: Mapping[str, int]) -> None:
        self.fn = fn
        self.procs = {label: psutil.Process(pid) for label, pid in pids.items()}
        self.samples: list[int] = []
        self.elapsed_ns = 0
        self.cpu_s = dict.fromkeys(self.procs, 0.0)
        self.foreign_s = 0.0

    def run(self, n: int) -> None:
        fn, clock, samples = self.fn, time.perf_counter_ns, [0] * n
        cpu0, busy0 = {k: _cpu_s(p) for k, p in self.procs.items()}, _busy_s()
        start = clock()
        for i in range(n):
            t0 = clock()
            fn()
            samples[i] = clock() - t0
        self.elapsed_ns += clock() - start
        ours = 0.0
        for label, proc in self.procs.items():
            used = _cpu_s(proc) - cpu0[label]
            self.cpu_s[label] += used
            ours += used
        self.foreign_s += max(0.0, _busy_s() - busy0 - ours)
        self.samples += samples

    def stats(self) -> dict[str, Any]:
        s, n = sorted(self.samples), len(self.samples)
        seconds = self.elapsed_ns / 1e9
        return {
            "n": n,
            "p50_us": s[n // 2] / 1000,
            "p99_us": s[min(n - 1, (n * 99) // 100)] / 1000,
            "mean_us": sum(s) / n / 1000,
            "per_s": n / seconds,
            "cpu_us_per_call": {k: v / n * 1e6 for k, v in self.cpu_s.items()},
            "foreign_cpu_pct": 100 * self.foreign_s / (seconds * (os.cpu_count() or 1)),
        }


def time_interleaved(fns: Mapping[str, tuple[Callable[[], object], Mapping[str, int]]],
                     n: int, warmup: int, rounds: int = 5) -> dict[str, dict[str, Any]]:
    """Warm up each callable, then time n calls of each in ``rounds`` alternating blocks, so a
    drift or a burst of outside load hits every contender alike."""
    timers = {label: Timer(fn, pids) for label, (fn, pids) in fns.items()}
    for t in timers.values():
        for _ in range(warmup):
            t.fn()
    for _ in range(rounds):
        for t in timers.values():
            t.run(n // rounds)
    return {label: t.stats() for label, t in timers.items()}


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _busy_s() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


# --- output --------------------------------------------------------------------------------
def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


HOG = "while True: pass"     # a CPU-bound process, for the batch slice


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{line}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(headers, widths, strict=True))))
    print(line)
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    print(line)


def verdict(met: bool | None, text: str) -> str:
    status = "skipped" if met is None else ("target met" if met else "target NOT met")
    line = f"  {status}: {text}"
    print(line)
    return status


def foreign_load(stats: Iterable[dict[str, Any]], quick: bool) -> None:
    """Say how much CPU the rest of the machine used while we timed (10 ms clock ticks:
    rough on the short blocks of --quick)."""
    worst = max(s["foreign_cpu_pct"] for s in stats)
    note = " — the machine was busy: figures disturbed, run again" if worst > 10 else ""
    print(f"  CPU used by other processes during the timed blocks: up to {worst:.0f}% of the "
          f"machine{' (rough with --quick)' if quick else ''}{note}")


def metadata(quick: bool) -> dict[str, Any]:
    import msgpack
    import zmq

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "quick": quick,
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\n  figures written to {path.relative_to(REPO)}")
    return path


# --- environment ---------------------------------------------------------------------------
@contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Pin this thread (and threads it starts later, e.g. a new zmq.Context's) to ``cpus``."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def thread_cpus(pid: int) -> set[str]:
    """The distinct Cpus_allowed_list values of every thread of ``pid`` (to prove pinning)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out.add(line.split(":", 1)[1].strip())
    return out


@contextmanager
def var_dir() -> Iterator[Path]:
    """A short private BDT_VAR (ipc socket paths must stay under 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="bdtb-"))
    try:
        (path / "run").mkdir(mode=0o700)
        (path / "log").mkdir()
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def child(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
          ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (cwd = the repo) for the duration; stopped by its PID, always."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(args), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    try:
        yield proc
    finally:
        stop(proc)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def bdt_env(var: Path, **extra: str) -> dict[str, str]:
    """This environment without stray BDT_* overrides, with BDT_VAR = ``var``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BDT_")}
    return {**env, "BDT_VAR": str(var), "PYTHONUNBUFFERED": "1", **extra}
