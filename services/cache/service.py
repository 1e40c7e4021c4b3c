"""The cache service: its bus ops over the LRU+TTL store (services/cache/store.py). The ops are
declared in shared.protocol.cache; other processes use the typed client,
``shared.bus.cache_client.CacheClient``."""

from __future__ import annotations

from typing import Any

from services.cache.store import CacheLimitError, CacheStore, CacheTypeError
from shared.bus.service import Service
from shared.bus.streams import StreamMessage
from shared.config import Config
from shared.protocol import cache, errors
from shared.protocol.events import EventError, parse_event


def cache_budget_bytes(cfg: Config) -> int:
    """The cache's byte bound: its slice's memory cap less headroom for the interpreter."""
    from shared.resources.cgexec import load_table

    cap = load_table(cfg).slice("cache").memory_max
    return max(1 << 20, cap - cfg.get("cache.memory_headroom_mb") * (1 << 20))


class CacheService(Service):
    name = "cache"
    summary = "in-memory LRU+TTL key/value store (replaces Redis)"
    ops = cache.OPS
    streams_in = ("events",)       # the monitor's resource mode

    def __init__(self, cfg: Config, store: CacheStore | None = None) -> None:
        super().__init__(cfg)
        self.tick_interval_s = cfg.get("cache.sweep_interval_ms") / 1000
        self.store = store if store is not None else CacheStore(
            max_bytes=cache_budget_bytes(cfg),
            max_items=cfg.get("cache.max_items"),
            max_key_bytes=cfg.get("cache.max_key_bytes"),
            max_value_bytes=cfg.get("cache.max_value_bytes"),
        )
        self.budget = self.store.max_bytes
        self.mode = "normal"

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        try:
            return super().handle(op, args)
        except (CacheLimitError, CacheTypeError) as exc:
            raise errors.MessageError(errors.BAD_ARGS, str(exc)) from None

    def tick(self) -> None:
        self.store.sweep()

    def on_stream(self, msg: StreamMessage) -> None:
        """Resource modes (docs/monitor.md): low_resource → half the byte budget; critical →
        half the budget and only the live namespaces (``cache.live_namespaces``) kept;
        normal → the whole budget again."""
        try:
            kind, fields = parse_event(msg.fields)
        except EventError:
            return
        if kind != "mode" or fields["mode"] == self.mode:
            return
        self.mode = fields["mode"]
        if self.mode == "normal":
            self.store.resize(self.budget)
            self.log.info("resource mode normal: byte budget back to %d MiB", self.budget >> 20)
            return
        evicted = self.store.resize(self.budget // 2)
        dropped = 0
        if self.mode == "critical":
            dropped = self.store.keep_only(tuple(self.cfg.get("cache.live_namespaces")))
        self.log.warning("resource mode %s: byte budget %d MiB (%d keys evicted), %d keys "
                         "outside the live namespaces dropped", self.mode, self.budget >> 21,
                         evicted, dropped)

    def service_status(self) -> dict[str, Any]:
        return {"cache": self.store.stats(), "resource_mode": self.mode}

    @staticmethod
    def _ttl(args: dict[str, Any]) -> float | None:
        return None if args["ttl"] is None else float(args["ttl"])

    def op_get(self, args: dict[str, Any]) -> bytes | None:
        return self.store.get(args["key"])

    def op_set(self, args: dict[str, Any]) -> bool:
        self.store.set(args["key"], args["value"], self._ttl(args))
        return True

    def op_delete(self, args: dict[str, Any]) -> int:
        return self.store.delete(k for k in args["keys"] if isinstance(k, str))

    def op_mget(self, args: dict[str, Any]) -> list[bytes | None]:
        return [self.store.get(k) if isinstance(k, str) else None for k in args["keys"]]

    def op_mset(self, args: dict[str, Any]) -> int:
        items, ttl = args["items"], self._ttl(args)
        bad = [k for k, v in items.items() if not isinstance(k, str) or not isinstance(v, bytes)]
        if bad:
            raise errors.MessageError(errors.BAD_ARGS, f"mset: {len(bad)} items are not str→bytes")
        for key, value in items.items():
            self.store.set(key, value, ttl)
        return len(items)

    def op_exists(self, args: dict[str, Any]) -> bool:
        return self.store.exists(args["key"])

    def op_incr(self, args: dict[str, Any]) -> int:
        return self.store.incr(args["key"], args["by"])

    def op_expire(self, args: dict[str, Any]) -> bool:
        return self.store.expire(args["key"], self._ttl(args))

    def op_ttl(self, args: dict[str, Any]) -> float:
        return self.store.ttl(args["key"])

    def op_keys(self, args: dict[str, Any]) -> list[str]:
        return self.store.keys(args["prefix"], args["limit"])

    def op_flush(self, args: dict[str, Any]) -> int:
        return self.store.flush(args["prefix"])

    def op_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.store.stats()
