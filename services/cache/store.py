"""In-memory LRU + TTL key/value store: the Redis replacement of seed 000 §4.2.

Values are opaque byte blobs (the client msgpack-packs them), so the server never re-encodes
and can account for memory exactly. Bounded two ways — bytes and items — with LRU eviction.
Expired keys are never returned; they are reclaimed from a min-heap of expiry times, so a
sweep costs O(expired · log n), never a scan of every key.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

# What one entry costs beyond its key and value bytes in CPython: the str and bytes object
# headers (~49 + ~33) and the OrderedDict slot and link (~100). Counted so the byte budget
# tracks real memory rather than payload alone.
ENTRY_OVERHEAD = 180


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
        self.bytes_used = 0
        self.hits = self.misses = self.evictions = self.expirations = 0

    # --- internals -------------------------------------------------------------------------
    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    def _check_key(self, key: str) -> None:
        if not key:
            raise CacheLimitError("key must not be empty")
        if len(key.encode()) > self.max_key_bytes:
            raise CacheLimitError(f"key of {len(key.encode())} bytes is over the "
                                  f"{self.max_key_bytes}-byte limit")

    def _remove(self, key: str) -> None:
        value = self._data.pop(key)
        self._expires.pop(key, None)
        self.bytes_used -= self._cost(key, value)

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
            self._expires.pop(key, None)
            return
        exp = self.clock() + ttl
        self._expires[key] = exp
        heapq.heappush(self._heap, (exp, key))
        # Stale heap entries (keys re-set or deleted) are skipped lazily; rebuild when they
        # outnumber live ones so the heap cannot grow without bound.
        if len(self._heap) > 2 * len(self._expires) + 1024:
            self._heap = [(e, k) for k, e in self._expires.items()]
            heapq.heapify(self._heap)

    def _evict(self) -> None:
        while self._data and (self.bytes_used > self.max_bytes or len(self._data) > self.max_items):
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
        self._check_key(key)
        if len(value) > self.max_value_bytes:
            raise CacheLimitError(f"value of {len(value)} bytes for {key!r} is over the "
                                  f"{self.max_value_bytes}-byte limit")
        if ttl is not None and ttl <= 0:
            raise CacheLimitError(f"ttl must be positive, got {ttl}")
        if key in self._data:
            self._remove(key)
        self._data[key] = value
        self.bytes_used += self._cost(key, value)
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
        """Integer add; a missing key counts from 0 and an existing TTL is kept."""
        current = self._live(key)
        number = 0
        if current is not None:
            number = msgpack.unpackb(current)
            if not isinstance(number, int) or isinstance(number, bool):
                raise CacheTypeError(f"incr on {key!r}: value is not an integer")
        number += by
        exp = self._expires.get(key)
        remaining = None if exp is None else max(exp - self.clock(), 1e-9)
        self.set(key, msgpack.packb(number), remaining)
        return number

    def expire(self, key: str, ttl: float | None) -> bool:
        """Set (or with None, clear) a key's TTL; False when the key is absent."""
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

    def flush(self, prefix: str | None = None) -> int:
        if not prefix:
            count = len(self._data)
            self._data.clear()
            self._expires.clear()
            self._heap.clear()
            self.bytes_used = 0
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
            if self._expires.get(key) == exp:
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
