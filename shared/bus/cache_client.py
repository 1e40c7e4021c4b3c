"""``CacheClient``: the typed client of the cache service that every process uses.

Values travel as msgpack blobs packed here, so the server stores bytes it never re-encodes
and can count exactly. The ops are declared in ``shared.protocol.cache``; the keys programs
share, with their writer, TTL and readers, in ``shared.protocol.cache_keys``.
"""

from __future__ import annotations

from typing import Any

from shared.bus import codec
from shared.bus.client import BadRequest, BusClient
from shared.config import Config
from shared.protocol.errors import MessageError


def decode_value(blob: bytes) -> Any:
    """A stored value: the msgpack blob decoded, or — when someone stored bytes that are not
    msgpack (a raw ``set`` over the bus) — those bytes as they are."""
    try:
        return codec.unpack(blob)
    except MessageError:
        return blob


def encode_value(op: str, value: Any) -> bytes:
    """``value`` as the msgpack blob the cache stores; BadRequest naming the op when msgpack
    cannot carry it (an integer past 64 bits, an object)."""
    try:
        return codec.pack(value, "the value")
    except MessageError as exc:
        raise BadRequest("cache", op, f"{exc.code}: {exc}", exc.code) from None


class CacheClient:
    """Typed access to the cache service; values are any msgpack-able Python value (a value
    msgpack cannot carry raises BadRequest-like MessageError before anything is sent). Each
    method is one op of ``shared.protocol.cache.OPS`` (a test holds them to it)."""

    def __init__(self, cfg: Config | None = None, **client_options: Any) -> None:
        self.bus = BusClient("cache", cfg, **client_options)

    def get(self, key: str, default: Any = None) -> Any:
        blob = self.bus.call("get", key=key)
        return default if blob is None else decode_value(blob)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.bus.call("set", key=key, value=encode_value("set", value), ttl=ttl)

    def delete(self, *keys: str) -> int:
        return self.bus.call("delete", keys=list(keys))

    def mget(self, keys: list[str]) -> list[Any]:
        return [None if b is None else decode_value(b) for b in self.bus.call("mget", keys=keys)]

    def mset(self, items: dict[str, Any], ttl: float | None = None) -> int:
        packed = {k: encode_value("mset", v) for k, v in items.items()}
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
