"""The cache service's ops, and ``CacheClient``, the typed client every process uses.

Values travel as msgpack blobs packed by the client, so the server stores bytes it never
re-encodes and can count exactly; ``CacheClient`` packs and unpacks them.
"""

from __future__ import annotations

from typing import Any

from shared.bus import codec
from shared.bus.client import BadRequest, BusClient
from shared.config import Config
from shared.protocol.common import table
from shared.protocol.errors import MessageError
from shared.protocol.ops import NUMBER, Arg, Op

KEY = Arg("key", str, "the key (namespaces by prefix, e.g. price:BTC)", cli="positional")
TTL = Arg("ttl", (*NUMBER, type(None)), "seconds until the key expires; null = never", None)

OPS = table(
    "cache",
    Op("get", "the value of a key", (KEY,), "bytes (a msgpack blob) or null", verb="cache get"),
    Op("set", "store a value, replacing any", (KEY, Arg("value", bytes, "a msgpack blob",
                                                        cli="positional"), TTL),
       "true", verb="cache set"),
    Op("delete", "remove keys", (Arg("keys", list, "the keys", cli="many"),),
       "int: how many existed", verb="cache del"),
    Op("mget", "the values of several keys", (Arg("keys", list, "the keys"),),
       "[bytes or null]", internal="CacheClient.mget: the batch form of get"),
    Op("mset", "store several values, one TTL for all",
       (Arg("items", dict, "key → msgpack blob"), TTL), "int: how many were stored",
       internal="CacheClient.mset: the batch form of set"),
    Op("exists", "whether a key is present and unexpired", (KEY,), "bool",
       verb="cache exists"),
    Op("incr", "add to an integer value (a missing key counts from 0); keeps the TTL",
       (KEY, Arg("by", int, "the increment", 1)), "int: the new value", verb="cache incr",
       idempotent=False),
    Op("expire", "set (or with null, clear) a key's TTL", (KEY, TTL), "bool: the key exists",
       verb="cache expire"),
    Op("ttl", "seconds left; -1 without TTL, -2 for no such key", (KEY,), "float",
       verb="cache ttl"),
    Op("keys", "live keys by prefix, in LRU order",
       (Arg("prefix", str, "only keys starting with this", ""),
        Arg("limit", int, "at most this many", 10_000, minimum=1)), "[str]",
       verb="cache keys"),
    Op("flush", "remove every key, or those with a prefix",
       (Arg("prefix", (str, type(None)), "only keys starting with this; null = all", None),),
       "int: how many were removed", verb="cache flush"),
    Op("stats", "items, bytes, bounds, hits, misses, hit rate, evictions, expirations", (),
       "{items, bytes, max_bytes, max_items, hits, misses, hit_rate, evictions, expirations, "
       "with_ttl}", verb="cache stats"),
)


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
    method is one op of ``OPS`` (a test holds them to it)."""

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
