"""In-memory LRU + TTL key/value store: the Redis replacement of seed 000 §4.2.

Values are opaque byte blobs (the client msgpack-packs them), so the server never re-encodes.
Bounded two ways — bytes and items — with LRU eviction; the byte bound is a bound on the memory
the store's structures really take, bookkeeping included (see "Memory accounting" below).
Expired keys are never returned; they are reclaimed from a min-heap of expiry times, so a
sweep costs O(expired · log n), never a scan of every key.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from shared.bus.codec import INT_MAX, INT_MIN, INT_RANGE

# --- Memory accounting ---------------------------------------------------------------------
# `bytes_used` counts everything the store keeps per key, so that the byte budget bounds real
# memory. (It used to count key + value + a flat 180 bytes and nothing of the TTL bookkeeping:
# 1M short keys with a TTL took ~1.7× the counted bytes and the kernel OOM-killed the cache.)
# It is the sum of
#
# * objects: every key str, value bytes, heap tuple and expiry float the store keeps alive, at
#   the block the allocator hands out for it (its size rounded up to pymalloc's 16-byte step).
#   A key with a TTL is charged to its heap tuple instead of its entry: the tuple holds the same
#   str while the entry lives, and keeps it alive after the entry is gone — a stale tuple left
#   by lazy deletion holds its float and its key until the heap drops it, and is counted so.
# * tables: the OrderedDict (hash table, linked-list nodes, node index), the `_expires` dict and
#   the heap list, at sys.getsizeof — O(1) and exact. A dict's table depends on its history
#   (it doubles on growth and is rebuilt at 3× the live count only on insertion; deletions
#   leave it as is), so no per-entry constant can track it: per live key it ranged from 66 to
#   98 bytes (OrderedDict) and 22 to 43 bytes (dict) on insertion alone, and twice that under
#   eviction churn.
#
# Measured on this machine (CPython 3.11.7, x86-64) with tracemalloc: 200k–360k objects of each
# kind built in a list, growth of get_traced_memory() / count (less the 8 B list slot), and the
# same from snapshot traces rounded up to 16 B: a key str of 11 ASCII chars takes 60 B → a 64 B
# block; a value of 2 bytes 35 → 48; an expiry float 24 → 32; a heap tuple (exp, key) 56 → 64
# (its GC header included); a heap list slot 8; the OrderedDict and dict per key as above. These
# are sys.getsizeof's numbers, so the constants below are taken from it. Whole stores filled 4×
# past a 64 MiB budget agree to the byte with the rounded traces (and are 5–11% over the raw
# traced bytes), and a process that msets 1M short keys with ttl=3600 into a 220 MiB store grew
# its RSS by 228 MiB (the old count: 187 MiB counted, 340 MiB of RSS growth). A short key with
# a TTL thus takes ~400–600 B, where the old count said 193. tests/test_cache_memory.py holds
# `bytes_used` to tracemalloc's measure of the store.

_STR_ASCII = sys.getsizeof("")  # 49: a compact ASCII str's header and NUL; + 1 B a char
_STR_WIDE = sys.getsizeof("é") - 2  # 72: a non-ASCII str's header; + 1, 2 or 4 B a char
_BYTES_HEAD = sys.getsizeof(b"")  # 33: a bytes object's header and NUL; + 1 B a byte
_EMPTY = b""
_ONE_BYTE = tuple(bytes(range(256))[i:i + 1] for i in range(256))  # CPython's singletons


def _blocks(size: int) -> int:
    """``size`` rounded up to pymalloc's 16-byte step (64-bit CPython ≥ 3.8). Blocks over
    512 B come from malloc, whose 8-byte header this leaves out: 2% at most."""
    return (size + 15) & -16


# One heap entry: the (exp, key) tuple and its float (the key is charged by _key_bytes).
HEAP_ENTRY_BYTES = _blocks(sys.getsizeof((0.0, ""))) + _blocks(sys.getsizeof(0.0))  # 64 + 32


def _key_bytes(key: str) -> int:
    """The blocks a key str takes, from its text alone — not sys.getsizeof, which grows once
    some C code (msgpack packing a `keys` reply) caches a non-ASCII str's UTF-8 form: what
    set() adds, _remove() must subtract. That cache is counted up front for non-ASCII keys."""
    if key.isascii():
        return (_STR_ASCII + len(key) + 15) & -16  # _blocks, inlined: this runs on every set
    top = max(key)
    width = 1 if top <= "\xff" else 2 if top <= "\uffff" else 4
    return _blocks(_STR_WIDE + (len(key) + 1) * width) + _blocks(len(key.encode()) + 1)


def _value_bytes(value: bytes) -> int:
    """The blocks a value takes; none for b"" and the 256 one-byte strings, which CPython shares
    (msgpack decodes every 1-byte blob — a small int, true, null — to one of them)."""
    if len(value) <= 1 and value is (_ONE_BYTE[value[0]] if value else _EMPTY):
        return 0
    return (_BYTES_HEAD + len(value) + 15) & -16  # _blocks, inlined


class CacheLimitError(ValueError):
    """A key or value over the configured size limit."""


class CacheTypeError(ValueError):
    """An operation on a value of the wrong type (incr on a non-integer)."""


class CacheStore:
    def __init__(
        self,
        max_bytes: int,
        max_items: int,
        max_key_bytes: int = 512,
        max_value_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes, self.max_items = max_bytes, max_items
        self.max_key_bytes, self.max_value_bytes = max_key_bytes, max_value_bytes
        self.clock = clock
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        # The objects (see "Memory accounting"): the entries' values and the keys without a
        # TTL; the heap tuples, their floats and the keys they hold, stale ones included.
        self._entry_bytes = self._heap_bytes = self._empty_tables = 0
        self._empty_tables = self.bytes_used  # so that an empty store counts 0
        self.hits = self.misses = self.evictions = self.expirations = 0

    @property
    def bytes_used(self) -> int:
        """The memory the store's structures take beyond those of an empty store: objects and
        tables (see "Memory accounting"). O(1); it is what the byte budget bounds."""
        # The tables by __sizeof__: sys.getsizeof less a constant GC header, at a third of the
        # cost (this runs on every set).
        tables = self._data.__sizeof__() + self._expires.__sizeof__() + self._heap.__sizeof__()
        return self._entry_bytes + self._heap_bytes + tables - self._empty_tables

    # --- internals -------------------------------------------------------------------------
    def _check_key(self, key: str) -> bytes:
        if not key:
            raise CacheLimitError("key must not be empty")
        raw = key.encode()
        if len(raw) > self.max_key_bytes:
            raise CacheLimitError(f"key of {len(raw)} bytes is over the "
                                  f"{self.max_key_bytes}-byte limit")
        return raw

    def _remove(self, key: str) -> None:
        value = self._data.pop(key)
        self._entry_bytes -= _value_bytes(value)
        if self._expires.pop(key, None) is None:
            self._entry_bytes -= _key_bytes(key)
            return
        # The key stays charged to its heap tuple, now stale, which still holds it. When that
        # tuple is at the heap's front — the LRU key is the first to expire when keys share a
        # TTL — drop it now, so that evicting the key frees all it took.
        heap = self._heap
        while heap and self._expires.get(heap[0][1]) is not heap[0][0]:
            self._heap_bytes -= HEAP_ENTRY_BYTES + _key_bytes(heapq.heappop(heap)[1])

    def _live(self, key: str) -> bytes | None:
        """The value if present and unexpired; an expired one is dropped on the spot."""
        value = self._data.get(key)
        if value is None:
            return None
        exp = self._expires.get(key)
        if exp is not None and exp <= self.clock():
            self._remove(key)
            self.expirations += 1
            return None
        return value

    def _set_expiry(self, key: str, ttl: float | None) -> None:
        if ttl is None:
            if self._expires.pop(key, None) is not None:
                self._entry_bytes += _key_bytes(key)  # the entry's again; the stale tuple's
            return                                    # charge goes with the tuple
        key_bytes = _key_bytes(key)
        if key not in self._expires:
            self._entry_bytes -= key_bytes            # charged to its heap tuple from now on
        exp = self.clock() + ttl
        self._expires[key] = exp
        heapq.heappush(self._heap, (exp, key))
        self._heap_bytes += HEAP_ENTRY_BYTES + key_bytes
        self._compact_heap()

    def _compact_heap(self) -> bool:
        """Drop the stale heap entries (of keys re-set, expired, deleted or evicted) once they
        outnumber half the live ones — they are counted all the while. The O(n) pass is paid
        for by the n/2 pushes, evictions or deletions that made them. True if it ran."""
        if len(self._heap) - len(self._expires) <= len(self._expires) // 2:
            return False
        live = []
        for entry in self._heap:
            if self._expires.get(entry[1]) is entry[0]:  # a live entry shares its float
                live.append(entry)
            else:
                self._heap_bytes -= HEAP_ENTRY_BYTES + _key_bytes(entry[1])
        heapq.heapify(live)
        self._heap = live
        return True

    def _evict(self) -> None:
        """Evict least recently used entries while over a bound; stale heap entries are
        dropped first when they are many, as evicting a key with a TTL makes one."""
        while self._data and (self.bytes_used > self.max_bytes or len(self._data) > self.max_items):
            if not self._compact_heap():
                self._remove(next(iter(self._data)))  # least recently used is first
                self.evictions += 1

    # --- operations ------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        value = self._live(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        raw = self._check_key(key)
        if len(value) > self.max_value_bytes:
            raise CacheLimitError(f"value of {len(value)} bytes for {key!r} is over the "
                                  f"{self.max_value_bytes}-byte limit")
        if ttl is not None and ttl <= 0:
            raise CacheLimitError(f"ttl must be positive, got {ttl}")
        if key in self._data:
            self._remove(key)
        # The store keeps its own copy of the key: msgpack interns map keys (so every mset key),
        # and an interned str kept here would also hold a slot of the interpreter's table of
        # interned strings, memory the store could not count.
        key = raw.decode()
        self._data[key] = value
        self._entry_bytes += _key_bytes(key) + _value_bytes(value)
        if ttl is not None:
            self._set_expiry(key, ttl)
        self._evict()

    def delete(self, keys: Iterable[str]) -> int:
        removed = 0
        for key in keys:
            if self._live(key) is not None:
                self._remove(key)
                removed += 1
        return removed

    def exists(self, key: str) -> bool:
        return self._live(key) is not None

    def incr(self, key: str, by: int = 1) -> int:
        """Integer add; a missing key counts from 0 and an existing TTL is kept. A sum past
        what msgpack carries (−2**63 … 2**64−1) is CacheLimitError naming it, the stored
        value unchanged; a value that is not a msgpack integer is CacheTypeError."""
        current = self._live(key)
        number = 0
        if current is not None:
            try:
                number = msgpack.unpackb(current)
            except Exception:  # msgpack raises several unrelated types on garbage
                number = None
            if not isinstance(number, int) or isinstance(number, bool):
                raise CacheTypeError(f"incr on {key!r}: value is not an integer")
        total = number + by
        if not INT_MIN <= total <= INT_MAX:
            raise CacheLimitError(f"incr on {key!r}: {number} + {by} = {total} is outside "
                                  f"{INT_RANGE}; {key!r} is unchanged")
        number = total
        exp = self._expires.get(key)
        remaining = None if exp is None else max(exp - self.clock(), 1e-9)
        self.set(key, msgpack.packb(number), remaining)
        return number

    def expire(self, key: str, ttl: float | None) -> bool:
        """Set (or with None, clear) a key's TTL; False when the key is absent.

        The TTL's record and heap entry hold the str passed here. When that is another object
        than the stored key (a key sent again over the bus) the store keeps both copies and
        counts one: the stored key cannot be looked up to be shared, and giving the entry a new
        key object would move it in the LRU order. A bounded shortfall (one key's str per key
        whose TTL expire() set), in an op no service sends in bulk."""
        if self._live(key) is None:
            return False
        if ttl is not None and ttl <= 0:
            self._remove(key)
            self.expirations += 1
            return True
        self._set_expiry(key, ttl)
        return True

    def ttl(self, key: str) -> float:
        """Seconds left; -1 for a key without TTL, -2 for no such key (as Redis answers)."""
        if self._live(key) is None:
            return -2
        exp = self._expires.get(key)
        return -1 if exp is None else exp - self.clock()

    def keys(self, prefix: str = "", limit: int = 10_000) -> list[str]:
        now = self.clock()
        out = []
        for key in self._data:
            if key.startswith(prefix):
                exp = self._expires.get(key)
                if exp is None or exp > now:
                    out.append(key)
                    if len(out) >= limit:
                        break
        return out

    def resize(self, max_bytes: int) -> int:
        """A new byte bound (the monitor's resource mode); least recently used keys are evicted
        down to it at once. Returns how many were evicted."""
        before = self.evictions
        self.max_bytes = max_bytes
        self._evict()
        return self.evictions - before

    def keep_only(self, prefixes: tuple[str, ...]) -> int:
        """Remove every key outside ``prefixes`` (critical mode keeps the live namespaces)."""
        doomed = [k for k in self._data if not k.startswith(prefixes)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def flush(self, prefix: str | None = None) -> int:
        if not prefix:
            count = len(self._data)
            self._data.clear()
            self._expires.clear()
            self._heap.clear()
            self._entry_bytes = self._heap_bytes = 0
            return count
        doomed = [k for k in self._data if k.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def sweep(self, budget: int = 10_000) -> int:
        """Reclaim up to ``budget`` expired keys from the heap front."""
        now, reclaimed = self.clock(), 0
        while self._heap and self._heap[0][0] <= now and reclaimed < budget:
            exp, key = heapq.heappop(self._heap)
            self._heap_bytes -= HEAP_ENTRY_BYTES + _key_bytes(key)
            if self._expires.get(key) is exp:     # else stale: a live entry shares its float
                self._remove(key)
                self.expirations += 1
                reclaimed += 1
        return reclaimed

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "items": len(self._data),
            "bytes": self.bytes_used,
            "max_bytes": self.max_bytes,
            "max_items": self.max_items,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 4) if lookups else 0.0,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "with_ttl": len(self._expires),
        }
