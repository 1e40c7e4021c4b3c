"""Everything that crosses a process boundary, declared once.

- ``errors``: every error code a server answers with.
- ``ops``, ``common``, one op table per service (``cache``, ``history``, ``predictor``, ``bot``,
  ``monitor``, ``scheduler``) and ``tables``: each request/reply op.
- ``events``: every kind of message on the ``events`` stream; ``alerts``: every alert kind.
- ``streams``: what the ``bars`` and ``predictions`` streams carry (and their skipped form).
- ``cache_keys``: every key programs share through the cache, its writer, TTL and readers.
- Database files: ``shared.storage.stores.STORES`` (owner, what, history or derived) — the one
  list; the protocol does not repeat it (and cannot import it: storage sits above the
  protocol). ``docs`` renders all of the above into docs/bus.md.

The protocol is the lowest layer: its modules import nothing outside it (``docs``, a generator
no program imports, excepted), and the bus and everything above import it
(tests/test_imports.py).
"""
