"""Bus ops of the cache service, and the client the other services use."""

from __future__ import annotations

from typing import Any

import msgpack

from shared import codec
from shared.bus import BusClient
from shared.cache import CacheLimitError, CacheStore, CacheTypeError
from shared.config import Config
from shared.service import Service, require

NUMBER = (int, float)


def cache_budget_bytes(cfg: Config) -> int:
    """The cache's byte bound: its slice's memory cap less headroom for the interpreter."""
    from shared.slices import load_table

    cap = load_table(cfg).slice("cache").memory_max
    return max(1 << 20, cap - cfg.get("cache.memory_headroom_mb") * (1 << 20))


class CacheService(Service):
    name = "cache"
    summary = "in-memory LRU+TTL key/value store (replaces Redis)"

    def __init__(self, cfg: Config, store: CacheStore | None = None) -> None:
        super().__init__(cfg)
        self.tick_interval_s = cfg.get("cache.sweep_interval_ms") / 1000
        self.store = store or CacheStore(
            max_bytes=cache_budget_bytes(cfg),
            max_items=cfg.get("cache.max_items"),
            max_key_bytes=cfg.get("cache.max_key_bytes"),
            max_value_bytes=cfg.get("cache.max_value_bytes"),
        )

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        try:
            return super().handle(op, args)
        except (CacheLimitError, CacheTypeError) as exc:
            raise codec.MessageError(codec.BAD_ARGS, str(exc)) from None

    def tick(self) -> None:
        self.store.sweep()

    def service_status(self) -> dict[str, Any]:
        return {"cache": self.store.stats()}

    @staticmethod
    def _ttl(args: dict[str, Any]) -> float | None:
        ttl = require(args, "ttl", (*NUMBER, type(None)), None)
        return None if ttl is None else float(ttl)

    def op_get(self, args: dict[str, Any]) -> bytes | None:
        return self.store.get(require(args, "key", str))

    def op_set(self, args: dict[str, Any]) -> bool:
        self.store.set(require(args, "key", str), require(args, "value", bytes), self._ttl(args))
        return True

    def op_delete(self, args: dict[str, Any]) -> int:
        keys = require(args, "keys", list)
        return self.store.delete(k for k in keys if isinstance(k, str))

    def op_mget(self, args: dict[str, Any]) -> list[bytes | None]:
        return [self.store.get(k) if isinstance(k, str) else None
                for k in require(args, "keys", list)]

    def op_mset(self, args: dict[str, Any]) -> int:
        items = require(args, "items", dict)
        ttl = self._ttl(args)
        bad = [k for k, v in items.items() if not isinstance(k, str) or not isinstance(v, bytes)]
        if bad:
            raise codec.MessageError(codec.BAD_ARGS, f"mset: {len(bad)} items are not str→bytes")
        for key, value in items.items():
            self.store.set(key, value, ttl)
        return len(items)

    def op_exists(self, args: dict[str, Any]) -> bool:
        return self.store.exists(require(args, "key", str))

    def op_incr(self, args: dict[str, Any]) -> int:
        return self.store.incr(require(args, "key", str), require(args, "by", int, 1))

    def op_expire(self, args: dict[str, Any]) -> bool:
        return self.store.expire(require(args, "key", str), self._ttl(args))

    def op_ttl(self, args: dict[str, Any]) -> float:
        return self.store.ttl(require(args, "key", str))

    def op_keys(self, args: dict[str, Any]) -> list[str]:
        prefix = require(args, "prefix", str, "")
        return self.store.keys(prefix, require(args, "limit", int, 10_000))

    def op_flush(self, args: dict[str, Any]) -> int:
        return self.store.flush(require(args, "prefix", (str, type(None)), None))

    def op_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.store.stats()


class CacheClient:
    """Typed access to the cache service; values are any msgpack-able Python value."""

    def __init__(self, cfg: Config | None = None, **client_options: Any) -> None:
        self.bus = BusClient("cache", cfg, **client_options)

    def get(self, key: str, default: Any = None) -> Any:
        blob = self.bus.call("get", key=key)
        return default if blob is None else msgpack.unpackb(blob, raw=False)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.bus.call("set", key=key, value=msgpack.packb(value, use_bin_type=True), ttl=ttl)

    def delete(self, *keys: str) -> int:
        return self.bus.call("delete", keys=list(keys))

    def mget(self, keys: list[str]) -> list[Any]:
        return [None if b is None else msgpack.unpackb(b, raw=False)
                for b in self.bus.call("mget", keys=keys)]

    def mset(self, items: dict[str, Any], ttl: float | None = None) -> int:
        packed = {k: msgpack.packb(v, use_bin_type=True) for k, v in items.items()}
        return self.bus.call("mset", items=packed, ttl=ttl)

    def exists(self, key: str) -> bool:
        return self.bus.call("exists", key=key)

    def incr(self, key: str, by: int = 1) -> int:
        return self.bus.call("incr", key=key, by=by)

    def expire(self, key: str, ttl: float | None) -> bool:
        return self.bus.call("expire", key=key, ttl=ttl)

    def ttl(self, key: str) -> float:
        return self.bus.call("ttl", key=key)

    def keys(self, prefix: str = "", limit: int = 10_000) -> list[str]:
        return self.bus.call("keys", prefix=prefix, limit=limit)

    def flush(self, prefix: str | None = None) -> int:
        return self.bus.call("flush", prefix=prefix)

    def stats(self) -> dict[str, Any]:
        return self.bus.call("stats")

    def close(self) -> None:
        self.bus.close()
