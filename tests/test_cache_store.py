"""The cache store alone: every op, TTL on an injected clock, LRU order, the bounds."""

import sys

import msgpack
import pytest

from services.cache import store as store_module
from services.cache.store import CacheLimitError, CacheStore, CacheTypeError


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


def test_overwrite_keeps_byte_accounting_exact(store, clock):
    store.set("k", b"x" * 100)
    store.set("k", b"y" * 10)
    twin = CacheStore(max_bytes=1 << 20, max_items=1000, clock=clock)
    twin.set("k", b"y" * 10)
    assert store.bytes_used == twin.bytes_used > 0   # nothing of the first value is left
    store.delete(["k"])
    twin.delete(["k"])
    assert store.bytes_used == twin.bytes_used       # what is left is the emptied hash table
    store.flush()                                    # (a dict keeps it), which flush releases
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
    assert store._heap == [] and store._heap_bytes == 0  # the swept keys' charges are gone:
    assert store._entry_bytes == store_module._key_bytes("forever")  # b"v": a singleton


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


def test_byte_accounting_returns_to_zero_after_every_kind_of_op(store, clock):
    """What the ops charge and release always balances: TTL and not, re-set, expire and
    persist, incr, delete, expiry on access and by sweep, non-ASCII keys (whose UTF-8 form
    CPython caches once msgpack packs them) — and stale heap entries until they are gone."""
    for i in range(300):
        key = f"k{i}" if i % 3 else f"ключ{i}€"
        store.set(key, msgpack.packb(i * 1000), ttl=None if i % 2 else 1 + i % 7)
        if i % 5 == 0:
            store.set(key, msgpack.packb(i), ttl=50)            # re-set: a stale heap entry
        if i % 7 == 0:
            store.expire(key, None if i % 2 else 30)            # persist, or a new TTL
        if i % 11 == 0:
            store.incr(f"n{i % 4}", i)
    msgpack.packb(store.keys())                                 # caches the UTF-8 forms
    clock.now += 5
    assert store.get("k2") is None                              # expired on access
    store.delete([f"k{i}" for i in range(0, 300, 4)])
    clock.now += 100
    assert store.sweep() > 0
    store.set("first", b"1", ttl=1)                             # the heap's front, so the
    for i in range(50):                                         # entries these leave stay
        store.set(f"later{i}", b"xy", ttl=1000 + i)
    others = store.keys()
    others.remove("first")
    assert store.delete(others) > 50
    assert store.keys() == ["first"] and store._entry_bytes == 0  # b"1": a singleton
    # Behind it, 50 stale heap entries, each still counted with the key it holds.
    assert len(store._heap) == 51
    assert store._heap_bytes == sum(store_module.HEAP_ENTRY_BYTES + store_module._key_bytes(k)
                                    for _, k in store._heap)
    clock.now += 10**6
    assert store.sweep() == 1                                   # pops the stale ones too
    assert len(store) == 0 and store._heap == [] and store._heap_bytes == 0
    assert store._entry_bytes == 0
    store.flush()
    assert store.bytes_used == 0


def test_store_keeps_its_own_copy_of_an_interned_key(store):
    """msgpack interns map keys (every mset key); a key the store kept interned would hold a
    slot of the interpreter's interned-string table, which the store cannot count."""
    key = sys.intern("price:BTC-interned")
    store.set(key, b"v")
    (stored,) = store._data
    assert stored == key and stored is not key
