"""The cache service's ops. Values travel as msgpack blobs packed by the client
(``shared.bus.cache_client.CacheClient``), so the server stores bytes it never re-encodes and
can count exactly. The keys programs share through the cache: ``shared.protocol.cache_keys``.
"""

from __future__ import annotations

from shared.protocol.common import table
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

