"""The bus: ZeroMQ + msgpack, named after the zguide's patterns.

``codec`` (the wire format), ``endpoints`` (where each service listens, socket options),
``client`` (lazy pirate REQ client and its errors), ``cache_client`` (the cache service's typed
client), ``server`` (ROUTER), ``streams`` (PUB/SUB), ``service`` (the shell every process runs in).
"""
