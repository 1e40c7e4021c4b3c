"""The services' own figures (bars, decisions, equity, inference latency, cache hit rate …):
their ``status`` reply, read over the bus with a short timeout and no retry, only from
services supervisord says are running, at most every ``monitor.status_interval_s``."""

from __future__ import annotations

import time
from typing import Any

from shared.bus.client import BusClient, BusError
from shared.config import Config
from shared.programs import PROGRAMS

# services whose status the metrics read: every program that answers the bus (the program
# table's services) but the monitor, which is the reader
READ = tuple(name for name, p in PROGRAMS.items() if p.kind.serves and name != "monitor")


class ServiceStatuses:
    """The latest ``status`` reply of each service in ``services`` (default ``READ``)."""

    def __init__(self, cfg: Config, interval_s: float, timeout_ms: int,
                 services: tuple[str, ...] = READ) -> None:
        self.cfg, self.interval_s, self.timeout_ms = cfg, interval_s, timeout_ms
        self.services = tuple(s for s in services if s in PROGRAMS)
        self.latest: dict[str, dict[str, Any]] = {}
        self.next_read = 0.0

    def refresh(self, running: set[str], force: bool = False) -> dict[str, dict[str, Any]]:
        """Read again when due (or ``force``); the replies by service — ``{"error": text}``
        for one that did not answer. Replaced whole, never changed in place."""
        now = time.monotonic()
        if not force and now < self.next_read:
            return self.latest
        self.next_read = now + self.interval_s
        out: dict[str, dict[str, Any]] = {}
        for name in self.services:
            if name not in running:
                continue
            try:
                with BusClient(name, self.cfg, timeout_ms=self.timeout_ms, retries=0) as client:
                    out[name] = client.call("status")
            except BusError as exc:
                out[name] = {"error": str(exc)}
        self.latest = out
        return out
