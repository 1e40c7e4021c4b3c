"""The cache's byte budget bounds the memory its store really takes, bookkeeping included.

Short keys go into a store under a 16 MiB budget, several times as many as fit, so it must
evict, and it stays under its budget all the way. tracemalloc, started before the store is
made, measures what the store's structures take once the fill is over, and ``bytes_used`` is
held to it: never below the bytes traced, and within 10% of the blocks the allocator hands out
for them (tracemalloc records the size asked for; pymalloc hands out 16-byte steps, malloc adds
an 8-byte header). Keys and values are fresh objects, as off the wire.
"""

import gc
import tracemalloc

import pytest

from services.cache.store import CacheStore
from shared.bus import codec

BUDGET = 16 << 20


def _allocated(snapshot: tracemalloc.Snapshot) -> int:
    """The allocator's blocks for the traced allocations."""
    return sum((size + 15) & -16 if size <= 512 else (size + 8 + 15) & -16
               for size in (trace.size for trace in snapshot.traces))


def _fill_and_measure(rounds: list[tuple[int, float | None]]):
    """Set rounds of (number of keys, ttl) — key:00000000 up, each value a msgpack int of 3
    to 5 bytes — into a store with BUDGET; the store, bytes traced, bytes allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before, traced_before = tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0]
        store = CacheStore(max_bytes=BUDGET, max_items=10**9)
        for count, ttl in rounds:
            for i in range(count):
                store.set(f"key:{i:08d}", codec.pack(1000 + i), ttl)
                assert store.bytes_used <= BUDGET
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
        allocated = _allocated(tracemalloc.take_snapshot()) - _allocated(before)
    finally:
        tracemalloc.stop()
    return store, traced, allocated


def _assert_counts_real_memory(store: CacheStore, traced: int, allocated: int) -> None:
    used = store.bytes_used
    report = (f"bytes_used {used / 2**20:.2f} MiB, traced {traced / 2**20:.2f} MiB, "
              f"allocated {allocated / 2**20:.2f} MiB for {len(store)} keys")
    assert used >= traced, report                        # the budget bounds real memory
    assert used == pytest.approx(allocated, rel=0.10), report
    assert store.evictions > 0, report


def test_short_keys_with_ttl_are_counted_with_their_expiry_bookkeeping():
    """The OOM of the field: TTL keys took ~1.7× what the store counted (heap and expiry
    records were not counted), so it never evicted and the kernel killed it."""
    store, traced, allocated = _fill_and_measure([(4 * BUDGET // 400, 3600)])
    assert len(store._expires) == len(store)
    _assert_counts_real_memory(store, traced, allocated)


def test_short_keys_without_ttl_are_counted_with_their_tables():
    store, traced, allocated = _fill_and_measure([(3 * BUDGET // 200, None)])
    assert not store._expires
    _assert_counts_real_memory(store, traced, allocated)


def test_keys_reset_with_ttl_count_their_stale_heap_entries():
    """Each re-set leaves the key's previous heap entry behind, stale, until the heap drops
    it; the TTLs shrink round by round so the stale ones are not at the heap's front."""
    store, traced, allocated = _fill_and_measure(
        [(BUDGET // 400, 3600.0 - round_) for round_ in range(5)])
    assert len(store._heap) > len(store._expires)        # stale entries are there, and counted
    _assert_counts_real_memory(store, traced, allocated)
