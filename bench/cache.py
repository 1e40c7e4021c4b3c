"""Cache service vs redis-server, one client, no pipelining: get/set/mget rates, then memory.

The cache runs as ``python -m services.cache`` (ipc), redis-server on 127.0.0.1 (tcp), each a
child of this process stopped by its PID. Both get the same 202-byte blobs (a 200-byte value,
msgpack-packed on the client: CacheClient does it itself, the redis side does it explicitly).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

import msgpack
import psutil

from bench import common
from shared.bus.cache_client import CacheClient
from shared.bus.client import wait_for
from shared.config import load_config

VALUE = random.Random(0).randbytes(200)
KEYS = 100_000      # loaded for the memory figure, then the keyspace of get/set/mget
BATCH = 1_000       # items per mset while loading
MGET = 100          # keys per mget
TARGET_SPEEDUP = 1.3
NO_REDIS = "redis-server not installed: comparison skipped (apt-get install redis-server)"
NO_REDIS_PY = "redis-py not installed: comparison skipped (pip install redis)"


def _redis_missing() -> str | None:
    """Why the redis comparison cannot run, or None."""
    if shutil.which("redis-server") is None:
        return NO_REDIS
    try:
        import redis  # noqa: F401
    except ImportError:
        return NO_REDIS_PY
    return None


class Backend(Protocol):
    """The same five operations against either server; values are packed like CacheClient's."""

    name: str
    pid: int

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def mget(self, keys: list[str]) -> list[Any]: ...
    def mset(self, items: dict[str, Any]) -> None: ...
    def used_bytes(self) -> int: ...


class CacheBackend:
    name = "cache"

    def __init__(self, client: CacheClient, pid: int) -> None:
        self.client, self.pid = client, pid

    def get(self, key: str) -> Any:
        return self.client.get(key)

    def set(self, key: str, value: Any) -> None:
        self.client.set(key, value)

    def mget(self, keys: list[str]) -> list[Any]:
        return self.client.mget(keys)

    def mset(self, items: dict[str, Any]) -> None:
        self.client.mset(items)

    def used_bytes(self) -> int:
        return int(self.client.stats()["bytes"])


class RedisBackend:
    name = "redis"

    def __init__(self, client: Any, pid: int) -> None:
        self.r, self.pid = client, pid

    def get(self, key: str) -> Any:
        blob = self.r.get(key)
        return None if blob is None else msgpack.unpackb(blob, raw=False)

    def set(self, key: str, value: Any) -> None:
        self.r.set(key, msgpack.packb(value, use_bin_type=True))

    def mget(self, keys: list[str]) -> list[Any]:
        return [None if b is None else msgpack.unpackb(b, raw=False) for b in self.r.mget(keys)]

    def mset(self, items: dict[str, Any]) -> None:
        self.r.mset({k: msgpack.packb(v, use_bin_type=True) for k, v in items.items()})

    def used_bytes(self) -> int:
        return int(self.r.info("memory")["used_memory"])


@contextmanager
def cache_backend(var: Path) -> Iterator[CacheBackend]:
    cfg = load_config({"BDT_VAR": str(var)})
    with common.child(common.python_module("services.cache"), var / "log" / "cache.log",
                      common.bdt_env(var)) as proc:
        wait_for("cache", cfg)
        client = CacheClient(cfg)
        try:
            yield CacheBackend(client, proc.pid)
        finally:
            client.close()


@contextmanager
def redis_backend(var: Path) -> Iterator[RedisBackend]:
    import redis

    port = common.free_port()
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", str(var), "--daemonize", "no"]
    with common.child(args, var / "log" / "redis.log") as proc:
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            _wait_redis(client, proc)
            yield RedisBackend(client, proc.pid)
        finally:
            client.close()


def _wait_redis(client: Any, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _keys() -> list[str]:
    return [f"bench:{i:06d}" for i in range(KEYS)]


def load(b: Backend) -> dict[str, Any]:
    """Fill a fresh server with KEYS keys by mset; its RSS before and after."""
    keys = _keys()
    proc = psutil.Process(b.pid)
    out: dict[str, Any] = {"rss_idle_bytes": proc.memory_info().rss}
    start = time.perf_counter()
    for i in range(0, KEYS, BATCH):
        b.mset({k: VALUE for k in keys[i:i + BATCH]})
    out["load_keys_per_s"] = KEYS / (time.perf_counter() - start)
    out["rss_loaded_bytes"] = proc.memory_info().rss
    out["server_bytes"] = b.used_bytes()
    assert b.get(keys[-1]) == VALUE and b.mget(keys[:2]) == [VALUE, VALUE]
    return out


def _ops(b: Backend) -> dict[str, Callable[[], object]]:
    keys = _keys()
    cycle = itertools.cycle(keys)
    windows = itertools.cycle([keys[i:i + MGET] for i in range(0, KEYS, MGET)])
    return {
        "set": lambda: b.set(next(cycle), VALUE),
        "get": lambda: b.get(next(cycle)),
        "mget": lambda: b.mget(next(windows)),
    }


def bench(quick: bool = False) -> dict[str, Any]:
    n, warmup = (2_000, 200) if quick else (20_000, 1_000)
    results: dict[str, Any] = {"meta": common.metadata(quick), "value_bytes": len(VALUE),
                               "keys": KEYS, "mget_keys": MGET, "redis_skipped": _redis_missing()}
    backends: list[Backend] = []
    with common.var_dir() as var, ExitStack() as stack:
        backends.append(stack.enter_context(cache_backend(var)))
        if not results["redis_skipped"]:
            import redis

            results["redis_py"] = redis.__version__
            version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                     text=True, check=False).stdout.split()
            results["redis_server"] = next((w[2:] for w in version if w.startswith("v=")), "?")
            backends.append(stack.enter_context(redis_backend(var)))
        for b in backends:
            results[b.name] = load(b)
        ops = {b.name: _ops(b) for b in backends}
        me = os.getpid()
        for op in ("set", "get", "mget"):
            count, warm = (n // 10, warmup // 10) if op == "mget" else (n, warmup)
            timed = common.time_interleaved(
                {b.name: (ops[b.name][op], {"client": me, "server": b.pid}) for b in backends},
                count, warm)
            for name, stats in timed.items():
                results[name][op] = stats
    for b in backends:
        results[b.name]["mget"]["keys_per_s"] = results[b.name]["mget"]["per_s"] * MGET
    report(results)
    return results


def report(r: dict[str, Any]) -> None:
    c, rd = r["cache"], r.get("redis")
    names = ["cache (CacheClient, ipc)"] + ([f"redis {r['redis_server']} (redis-py "
                                              f"{r['redis_py']}, tcp)"] if rd else [])
    rows = []
    for label, key in (("set ops/s", "set"), ("get ops/s", "get"), ("mget calls/s", "mget")):
        row: list[object] = [label] + [x[key]["per_s"] for x in (c, rd) if x]
        rows.append(row + ([f"{c[key]['per_s'] / rd[key]['per_s']:.2f}x"] if rd else []))
        row = [f"  {key} p50 / p99 µs"] + [f"{x[key]['p50_us']:.1f} / {x[key]['p99_us']:.1f}"
                                           for x in (c, rd) if x]
        rows.append(row + ([""] if rd else []))
        row = [f"  {key} CPU µs client / server"] + [
            "{client:.1f} / {server:.1f}".format(**x[key]["cpu_us_per_call"]) for x in (c, rd) if x]
        rows.append(row + ([""] if rd else []))
    row = ["mget keys/s"] + [x["mget"]["keys_per_s"] for x in (c, rd) if x]
    rows.append(row + ([f"{c['mget']['keys_per_s'] / rd['mget']['keys_per_s']:.2f}x"]
                       if rd else []))
    headers = ["", *names] + (["cache/redis"] if rd else [])
    common.print_table(
        f"cache, one client, no pipelining: {r['value_bytes']}-byte values, mget of "
        f"{r['mget_keys']} keys, {c['get']['n']:,} ops each (mget {c['mget']['n']:,}), "
        "in 5 alternating blocks",
        headers, rows)
    mib = 1 << 20
    mem_rows = [
        ["RSS idle (MiB)"] + [x["rss_idle_bytes"] / mib for x in (c, rd) if x],
        [f"RSS with {r['keys']:,} keys (MiB)"] + [x["rss_loaded_bytes"] / mib
                                                   for x in (c, rd) if x],
        ["RSS growth (MiB)"] + [(x["rss_loaded_bytes"] - x["rss_idle_bytes"]) / mib
                                for x in (c, rd) if x],
        ["server's own count (MiB)"] + [x["server_bytes"] / mib for x in (c, rd) if x],
        ["load rate (keys/s, mset)"] + [x["load_keys_per_s"] for x in (c, rd) if x],
    ]
    mem_names = ["cache", "redis-server"] if rd else ["cache"]
    common.print_table(f"memory: {r['keys']:,} keys x {r['value_bytes']}-byte values "
                       "(RSS by psutil; own count: cache stats() bytes, redis used_memory)",
                       ["", *mem_names], [[*row, ""][: len(mem_names) + 1] for row in mem_rows])
    print("  processes not pinned (the OS schedules client and server on the 2 cores)")
    common.foreign_load((x[op] for x in (c, rd) if x for op in ("set", "get", "mget")),
                        r["meta"]["quick"])
    verdicts = r["verdicts"] = {}
    if rd is None:
        verdicts["speed"] = verdicts["memory"] = common.verdict(None, r["redis_skipped"])
        return
    for op in ("set", "get", "mget"):
        ratio = c[op]["per_s"] / rd[op]["per_s"]
        verdicts[op] = common.verdict(
            ratio >= TARGET_SPEEDUP,
            f"cache {op} ≥ {TARGET_SPEEDUP}x redis-py (measured {ratio:.2f}x)")
    ratio = c["rss_loaded_bytes"] / rd["rss_loaded_bytes"]
    verdicts["memory"] = common.verdict(
        ratio <= 1.0, f"cache RSS ≤ redis-server RSS with {r['keys']:,} keys "
        f"(measured {ratio:.2f}x: {c['rss_loaded_bytes'] / mib:.1f} vs "
        f"{rd['rss_loaded_bytes'] / mib:.1f} MiB)")
