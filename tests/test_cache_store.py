"""The cache store alone: every op, TTL on an injected clock, LRU order, the bounds."""

import msgpack
import pytest

from services.cache.store import ENTRY_OVERHEAD, CacheLimitError, CacheStore, CacheTypeError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return CacheStore(max_bytes=1 << 20, max_items=1000, max_key_bytes=32,
                      max_value_bytes=1024, clock=clock)


def test_get_set_delete_exists(store):
    assert store.get("a") is None
    store.set("a", b"1")
    assert store.get("a") == b"1"
    assert store.exists("a")
    assert store.delete(["a", "missing"]) == 1
    assert not store.exists("a")
    assert store.stats()["hits"] == 1 and store.stats()["misses"] == 1


def test_overwrite_keeps_byte_accounting_exact(store):
    store.set("k", b"x" * 100)
    store.set("k", b"y" * 10)
    assert store.bytes_used == len("k") + 10 + ENTRY_OVERHEAD
    store.delete(["k"])
    assert store.bytes_used == 0


def test_ttl_expiry_with_injected_clock(store, clock):
    store.set("s", b"v", ttl=10)
    assert 9.9 < store.ttl("s") <= 10
    clock.now += 9.999
    assert store.get("s") == b"v"
    clock.now += 0.002
    assert store.get("s") is None          # never returned once expired
    assert store.ttl("s") == -2
    assert store.stats()["expirations"] == 1
    store.set("p", b"v")
    assert store.ttl("p") == -1


def test_sweep_reclaims_expired_without_touching_live_keys(store, clock):
    for i in range(100):
        store.set(f"t{i}", b"v", ttl=1 + (i % 2))  # half expire at +1, half at +2
    store.set("forever", b"v")
    clock.now += 1.5
    assert store.sweep() == 50
    assert len(store) == 51
    assert store.sweep() == 0               # nothing more is due: the heap front is in the future
    clock.now += 1
    assert store.sweep() == 50
    assert store.keys() == ["forever"]
    assert store.bytes_used == len("forever") + 1 + ENTRY_OVERHEAD


def test_reset_ttl_leaves_stale_heap_entries_harmless(store, clock):
    store.set("k", b"v", ttl=1)
    store.set("k", b"v", ttl=100)           # old heap entry is now stale
    clock.now += 2
    assert store.sweep() == 0
    assert store.get("k") == b"v"
    for _ in range(5000):                   # re-setting TTLs cannot grow the heap without bound
        store.expire("k", 50)
    assert len(store._heap) <= 2 * len(store._expires) + 1025


def test_expire_and_persist(store, clock):
    assert store.expire("missing", 5) is False
    store.set("k", b"v")
    assert store.expire("k", 5)
    clock.now += 4
    assert store.expire("k", None)          # clears the TTL
    clock.now += 10
    assert store.get("k") == b"v"
    assert store.expire("k", 0)             # non-positive TTL deletes, as in Redis
    assert not store.exists("k")


def test_lru_order_on_item_bound(clock):
    store = CacheStore(max_bytes=1 << 20, max_items=3, clock=clock)
    for key in "abc":
        store.set(key, b"v")
    store.get("a")                          # a becomes most recent; b is now least recent
    store.set("d", b"v")
    assert store.keys() == ["c", "a", "d"]
    assert store.stats()["evictions"] == 1


def test_byte_budget_holds_when_filled_far_past_it(clock):
    budget = 100_000
    store = CacheStore(max_bytes=budget, max_items=10**9, max_value_bytes=4096, clock=clock)
    for i in range(10_000):                 # ~3 MB offered to a 100 kB budget
        store.set(f"k{i}", b"x" * 200)
        assert store.bytes_used <= budget
    assert store.stats()["evictions"] > 9000
    assert store.get("k9999") == b"x" * 200  # the newest survive
    assert store.get("k0") is None


def test_incr(store, clock):
    assert store.incr("n") == 1
    assert store.incr("n", 41) == 42
    assert msgpack.unpackb(store.get("n")) == 42
    store.set("t", msgpack.packb(1), ttl=5)
    store.incr("t")
    assert 0 < store.ttl("t") <= 5          # incr keeps the TTL
    store.set("s", msgpack.packb("text"))
    with pytest.raises(CacheTypeError, match="not an integer"):
        store.incr("s")


def test_keys_by_prefix_and_flush_namespace(store):
    store.set("price:BTC", b"1")
    store.set("price:ETH", b"2")
    store.set("feature:BTC", b"3")
    assert sorted(store.keys("price:")) == ["price:BTC", "price:ETH"]
    assert store.flush("price:") == 2
    assert store.keys() == ["feature:BTC"]
    assert store.flush() == 1
    assert store.bytes_used == 0 and len(store) == 0


def test_size_limits_are_clear_errors(store):
    with pytest.raises(CacheLimitError, match="key of 33 bytes is over the 32-byte limit"):
        store.set("k" * 33, b"v")
    with pytest.raises(CacheLimitError, match="value of 1025 bytes for 'k' is over the 1024"):
        store.set("k", b"v" * 1025)
    with pytest.raises(CacheLimitError, match="empty"):
        store.set("", b"v")
    with pytest.raises(CacheLimitError, match="ttl must be positive"):
        store.set("k", b"v", ttl=-1)
    assert len(store) == 0
