"""Start and stop real processes for tests: by PID, never by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def child_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BDT_")}
    env.update(BDT_VAR=str(var_dir), PYTHONUNBUFFERED="1",
               PATH=f"{VENV_BIN}:{env.get('PATH', '')}", **extra)
    return env


def start_module(module: str, var_dir: Path, *args: str, **env: str) -> subprocess.Popen:
    log = open(var_dir / f"{module.replace('.', '_')}.log", "ab")  # noqa: SIM115 - child owns it
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO,
                            env=child_env(var_dir, **env), stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def threads_all_ended() -> Iterator[None]:
    """Every server and request thread a test starts has ended when it is over (5 s grace).
    Modules that start threads make it an autouse fixture:
    ``no_thread_left = pytest.fixture(autouse=True)(threads_all_ended)``."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while (left := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not left, f"threads left running: {left}"


def store_closes(cfg, closes: list[float], symbol: str = "BTC/USDT",
                 start_ts: int = 1_700_006_400_000, step_ms: int = 60_000) -> None:
    """Flat bars (open = high = low = close) of ``closes`` into ``cfg``'s market store, one
    every ``step_ms`` from ``start_ts`` (a UTC midnight by default)."""
    import polars as pl

    from shared.storage.bar_store import open_store

    n = len(closes)
    frame = pl.DataFrame({"ts": [start_ts + i * step_ms for i in range(n)], "open": closes,
                          "high": closes, "low": closes, "close": closes, "volume": [1.0] * n})
    store = open_store(cfg)
    try:
        store.insert_frame(symbol, frame)
    finally:
        store.close()


@contextmanager
def webhook_receiver() -> Iterator[Any]:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) that keeps every JSON body POSTed to
    it in ``server.received`` (and answers 204), served from a thread for the duration; shut
    down and closed after."""
    import http.server
    import json

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.received.append(json.loads(body))   # type: ignore[attr-defined]
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.received = []                                   # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def bars_subscribed(cfg: Any) -> Iterator[tuple[Any, Any]]:
    """A ``bars`` Publisher (as the bot) and a Subscriber to it, the subscription settled and
    the probes drained; both closed after."""
    import zmq

    from shared.bus.streams import Publisher, Subscriber

    ctx = zmq.Context.instance()
    pub, sub = Publisher("bot", cfg, ctx), Subscriber(["bars"], cfg, ctx)
    try:
        wait_until(lambda: (pub.publish("bars", {"probe": 1}), sub.receive(timeout_ms=50))[1],
                   what="subscription")
        while sub.receive(timeout_ms=100):
            pass
        yield pub, sub
    finally:
        sub.close()
        pub.close()
