"""What every benchmark shares: timing, tables, JSON results, pinning, child processes by PID."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench-results"


# --- timing --------------------------------------------------------------------------------
def time_calls(fn: Callable[[], object], n: int, warmup: int) -> dict[str, float]:
    """Call ``fn`` warmup + n times; per-call perf_counter_ns over the last n."""
    for _ in range(warmup):
        fn()
    samples = [0] * n
    clock = time.perf_counter_ns
    start = clock()
    for i in range(n):
        t0 = clock()
        fn()
        samples[i] = clock() - t0
    elapsed_ns = clock() - start
    samples.sort()
    return {
        "n": n,
        "p50_us": samples[n // 2] / 1000,
        "p99_us": samples[min(n - 1, (n * 99) // 100)] / 1000,
        "mean_us": sum(samples) / n / 1000,
        "per_s": n / (elapsed_ns / 1e9),
    }


# --- output --------------------------------------------------------------------------------
def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


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


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def bdt_env(var: Path, **extra: str) -> dict[str, str]:
    """This environment without stray BDT_* overrides, with BDT_VAR = ``var``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BDT_")}
    return {**env, "BDT_VAR": str(var), "PYTHONUNBUFFERED": "1", **extra}
