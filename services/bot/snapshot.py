"""The bot's part of the cache snapshot (``bot:last_bar``, ``bot:prediction``, ``bot:position``,
``bot:equity``, ``bot:risk``; TTL ``BOT_TTL_S``, declared in shared.protocol.cache_keys).
``bdt status`` reads ``bot:position`` and ``bot:equity`` in its one round trip; no program
reads the other three (``bdt cache get`` shows them); the dashboard reads none of them (it
reads the trading state). Written from a thread of its own that keeps only the latest offer,
so a slow or dead cache never holds up a bar: at most one write in flight, the rest replaced."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from shared.config import Config
from shared.protocol.cache_keys import BOT_TTL_S

log = logging.getLogger("bdt.bot")


class SnapshotWriter(threading.Thread):
    def __init__(self, cfg: Config) -> None:
        super().__init__(name="snapshot", daemon=True)
        self.cfg = cfg
        self.latest: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=1)
        self.written = self.failed = 0

    def offer(self, items: dict[str, Any]) -> None:
        """The newest snapshot; an older one not written yet is dropped."""
        try:
            self.latest.get_nowait()
        except queue.Empty:
            pass
        try:
            self.latest.put_nowait(items)
        except queue.Full:
            pass

    def stop(self) -> None:
        self.offer(None)                # type: ignore[arg-type]
        self.join(2)

    def run(self) -> None:
        from shared.bus.cache_client import CacheClient
        from shared.bus.client import BusError

        client = CacheClient(self.cfg, timeout_ms=300, retries=0)     # this thread's own socket
        try:
            while (items := self.latest.get()) is not None:
                try:
                    client.mset(items, ttl=BOT_TTL_S)
                    self.written += 1
                except BusError as exc:
                    self.failed += 1
                    if self.failed % 60 == 1:
                        log.warning("cache snapshot not written (%d so far): %s", self.failed,
                                    exc)
        finally:
            client.close()
