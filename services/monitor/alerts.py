"""The one sink of alerts. Every service raises its alerts as ``alert`` events
(``shared.protocol.alerts.raise_alert``; the kinds are declared there); the monitor hears them
on the ``events`` stream — its own it takes at once — and hands each to ``AlertBook.take``:

- **stored once**: one row in monitor.db (``bdt alerts``) and one log line; the same kind and
  subject from another source within ``min_interval_s`` (an OOM kill seen by the scheduler and
  by the monitor) is the same alert: its row gains the source and the figures it lacked;
- **counted** per kind (``bdt_alerts_total{kind}``);
- **notified** at most once per kind per ``min_interval_s``: POSTed to the webhook, if one is
  configured. The others are recorded with ``notified`` false, and the next notified alert of
  that kind says how many were held back.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from services.monitor.store import MonitorDB
from shared.protocol.alerts import check_alert

log = logging.getLogger("bdt.monitor")


def redact(url: str) -> str:
    """``url`` without its path and query, which often hold a secret token (a Slack or
    Discord webhook): what logs and ``status`` show."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


class Webhook:
    """POSTs one JSON object per alert to ``url`` from a thread of its own, so a slow or dead
    endpoint never delays sampling. At most ``backlog`` alerts wait; more are dropped and
    counted. One attempt per alert, ``timeout_s`` each; failures are logged and counted."""

    def __init__(self, url: str, timeout_s: float, backlog: int = 100) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(backlog)
        self.sent = self.failed = self.dropped = 0
        self.last_error = ""
        self.thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.thread.start()

    def send(self, payload: dict[str, Any]) -> bool:
        """Queue ``payload``; False (and counted) when the backlog is full."""
        try:
            self.queue.put_nowait(payload)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while (payload := self.queue.get()) is not None:
            body = json.dumps(payload, default=str).encode()
            request = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "User-Agent": "bitdaytrader-monitor"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    reply.read()
                self.sent += 1
            except (OSError, urllib.error.URLError, ValueError) as exc:
                self.failed += 1
                self.last_error = str(exc).replace(self.url, redact(self.url))
                log.warning("webhook %s: alert %s not delivered: %s", redact(self.url),
                            payload.get("id"), str(exc).replace(self.url, redact(self.url)))

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``), then stop the thread."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {"url": redact(self.url), "sent": self.sent, "failed": self.failed,
                "dropped": self.dropped, "last_error": self.last_error}


class AlertBook:
    """Takes alert events: records, logs, deduplicates across sources and notifies within
    the per-kind rate limit."""

    def __init__(self, db: MonitorDB, min_interval_s: float, webhook: Webhook | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.min_interval_s = db, min_interval_s
        self.webhook, self.clock = webhook, clock
        self.last_notified: dict[str, float] = {}
        self.held_back: dict[str, int] = {}
        self.last: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}  # (kind, subject)
        self.counts: collections.Counter[str] = collections.Counter()
        self.merged = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.host = socket.gethostname()

    def take(self, fields: dict[str, Any]) -> dict[str, Any]:
        """One ``alert`` event: its record (an earlier one when it is that one seen by another
        source). AlertError for one its declaration refuses (checked by every raiser)."""
        check_alert(fields)
        kind, subject, source = fields["alert"], fields["subject"], fields["source"]
        now = self.clock()
        seen = self.last.get((kind, subject))
        if seen and now - seen[0] < self.min_interval_s and source not in seen[1]["sources"]:
            return self._merge(seen[1], source, fields["figures"])
        figures = dict(fields["figures"])
        last = self.last_notified.get(kind)
        notify = last is None or now - last >= self.min_interval_s
        held = self.held_back.pop(kind, 0) if notify else 0
        if held:
            figures["held_back_before"] = held
        ts_ms = int(time.time() * 1000)
        severity, message = fields["severity"], fields["message"]
        alert_id = self.db.add_alert(ts_ms, kind, severity, subject, message, figures, notify,
                                     [source])
        record = {"id": alert_id, "ts": ts_ms, "kind": kind, "severity": severity,
                  "subject": subject, "message": message, "figures": figures,
                  "notified": notify, "sources": [source]}
        self.last[(kind, subject)] = (now, record)
        self.counts[kind] += 1
        self.recent.append(record)
        if not notify:
            self.held_back[kind] = self.held_back.get(kind, 0) + 1
            log.info("alert %s [%s] %s from %s: %s (not notified: a %s alert went out %.0f s "
                     "ago)", kind, severity, subject, source, message, kind, now - (last or now))
            return record
        self.last_notified[kind] = now
        level = logging.INFO if severity == "info" else logging.WARNING
        log.log(level, "ALERT %s [%s] %s from %s: %s", kind, severity, subject, source, message)
        if self.webhook is not None:
            self.webhook.send({
                "source": "bitdaytrader", "host": self.host, **record,
                "time": dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).isoformat()})
        return record

    def _merge(self, record: dict[str, Any], source: str, figures: dict[str, Any]
               ) -> dict[str, Any]:
        """``record`` seen again by ``source``: one alert, its row updated, nothing sent."""
        record["sources"].append(source)
        for name, value in figures.items():
            record["figures"].setdefault(name, value)
        self.db.merge_alert(record["id"], record["sources"], record["figures"])
        self.merged += 1
        log.info("alert %s %s from %s: the same as alert %d from %s", record["kind"],
                 record["subject"], source, record["id"], record["sources"][0])
        return record

    def active(self, within_s: float = 3600.0) -> list[dict[str, Any]]:
        """Alerts of the last ``within_s`` seconds at warning or worse, newest last."""
        since = (time.time() - within_s) * 1000
        return [a for a in self.recent if a["ts"] >= since and a["severity"] != "info"]
