"""Every cache op through the client against the real cache process, and several clients."""

import threading

import pytest

from shared.bus.cache_client import CacheClient
from shared.bus.client import BadRequest, wait_for
from tests.helpers import start_module, stop_process


@pytest.fixture
def cache(cfg, var_dir):
    proc = start_module("services.cache", var_dir, BDT_CACHE__MAX_VALUE_BYTES="4096",
                        BDT_CACHE__MAX_KEY_BYTES="64")
    wait_for("cache", cfg)
    client = CacheClient(cfg)
    yield client
    client.close()
    assert stop_process(proc) == 0


def test_every_op(cache):
    cache.set("price:BTC", {"bid": 100.5, "ask": 100.7})
    cache.set("raw", b"\x00\x01")
    assert cache.get("price:BTC") == {"bid": 100.5, "ask": 100.7}
    assert cache.get("raw") == b"\x00\x01"
    assert cache.get("missing", "dflt") == "dflt"
    assert cache.mset({"feature:a": [1, 2], "feature:b": 3.5}, ttl=60) == 2
    assert cache.mget(["feature:a", "nope", "feature:b"]) == [[1, 2], None, 3.5]
    assert cache.exists("feature:a") and not cache.exists("nope")
    assert 0 < cache.ttl("feature:a") <= 60 and cache.ttl("raw") == -1 and cache.ttl("x") == -2
    assert cache.expire("raw", 30) and 0 < cache.ttl("raw") <= 30
    assert cache.incr("count") == 1 and cache.incr("count", 9) == 10
    assert sorted(cache.keys("feature:")) == ["feature:a", "feature:b"]
    assert cache.delete("feature:a", "nope") == 1
    assert cache.flush("feature:") == 1
    stats = cache.stats()
    assert stats["items"] == 3 and stats["hits"] >= 3 and stats["misses"] >= 1
    assert 0 < stats["hit_rate"] < 1
    assert cache.flush() == 3
    assert cache.stats()["items"] == 0


def test_limits_are_clear_errors(cache):
    with pytest.raises(BadRequest, match="key of 65 bytes is over the 64-byte limit"):
        cache.set("k" * 65, 1)
    with pytest.raises(BadRequest, match="is over the 4096-byte limit"):
        cache.set("big", b"x" * 5000)
    with pytest.raises(BadRequest, match="argument 'ttl' must be"):
        cache.bus.call("set", key="k", value=b"\x01", ttl="soon")
    assert cache.get("k") is None


def test_concurrent_clients(cfg, cache):
    errors: list[Exception] = []

    def worker(n: int) -> None:
        client = CacheClient(cfg)
        try:
            for i in range(200):
                client.set(f"w{n}:{i}", i)
                assert client.get(f"w{n}:{i}") == i
                client.incr("shared")
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert cache.get("shared") == 6 * 200
    assert len(cache.keys("w")) == 6 * 200


def test_a_non_idempotent_op_is_never_resent_after_a_timeout(cfg, var_dir):
    """Issue 12 case 6: the cache stopped (SIGSTOP) for 2 s during one incr. The lazy pirate
    client used to resend it on a fresh socket, and the stopped cache, once continued, applied
    both: 2, not 1. An op declared non-idempotent is sent once; the caller is told it may have
    been applied; the stored value is 1."""
    import os
    import signal

    from shared.bus.client import RequestTimeout
    from tests.helpers import wait_until

    proc = start_module("services.cache", var_dir)
    try:
        wait_for("cache", cfg)
        client = CacheClient(cfg, timeout_ms=500, retries=3)
        client.stats()                                   # warm: connected
        os.kill(proc.pid, signal.SIGSTOP)
        timer = threading.Timer(2.0, os.kill, (proc.pid, signal.SIGCONT))
        timer.start()
        try:
            with pytest.raises(RequestTimeout, match="not idempotent: it may or may not"):
                client.incr("orders:sent")
        finally:
            timer.join()
        wait_until(lambda: CacheClient(cfg).get("orders:sent") is not None, timeout=5,
                   what="the incr applied after SIGCONT")
        assert CacheClient(cfg).get("orders:sent") == 1
        assert client.incr("orders:sent") == 2          # the client goes on working
        client.close()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        assert stop_process(proc) == 0


def test_values_the_wire_cannot_carry_are_caller_errors(cache, cfg):
    """Issue 12 case 3: an integer past msgpack's range is a clear BadRequest, not an
    OverflowError; bytes stored raw (not msgpack) come back as bytes."""
    from shared.bus.client import BusClient

    with pytest.raises(BadRequest, match="outside msgpack's range"):
        cache.set("big", 18446744073709551616)
    with BusClient("cache", cfg) as raw:
        raw.call("set", key="raw", value=b"\xc1")
    assert cache.get("raw") == b"\xc1"


def test_bdt_cache_set_and_get_of_values_the_wire_cannot_carry(cache, cfg, var_dir):
    import subprocess

    from shared.bus.client import BusClient
    from tests.helpers import child_env

    def bdt(*args):
        return subprocess.run(["bdt", "cache", *args], capture_output=True, text=True,
                              env=child_env(var_dir), timeout=60)

    big = bdt("set", "big", "18446744073709551616")
    assert big.returncode == 1 and "outside msgpack's range" in big.stderr
    assert "Traceback" not in big.stderr
    with BusClient("cache", cfg) as raw:
        raw.call("set", key="raw", value=b"\xc1")
    got = bdt("get", "raw")
    assert got.returncode == 0 and got.stdout.strip() == r"(raw bytes, not msgpack) b'\xc1'"


def test_resource_modes_shrink_the_cache_and_keep_the_live_namespaces(cfg):
    """Issue 16: low_resource halves the byte budget; critical keeps only the live namespaces
    (monitor:, bot:, scheduler:); normal gives the budget back."""
    from services.cache.service import CacheService
    from services.cache.store import CacheStore
    from shared.bus.streams import StreamMessage

    store = CacheStore(max_bytes=8 << 20, max_items=100_000)
    svc = CacheService(cfg, store)
    for i in range(6000):                                  # ~7 MiB of 8
        store.set(f"feature:{i}", b"x" * 1000)
    for key in ("monitor:sample", "bot:position", "scheduler:jobs"):
        store.set(key, b"live")

    def mode(m: str) -> None:
        svc.on_stream(StreamMessage("events", {"kind": "mode", "mode": m}))

    mode("low_resource")
    assert store.max_bytes == 4 << 20 and store.bytes_used <= 4 << 20 and store.evictions > 0
    mode("critical")
    assert sorted(store.keys()) == ["bot:position", "monitor:sample", "scheduler:jobs"]
    mode("normal")
    assert store.max_bytes == 8 << 20 and svc.service_status()["resource_mode"] == "normal"
