"""The monitor's SQLite database (``var/data/monitor.db``, through the project's one SQLite
helper): the alerts (with the services that raised each), the mode changes, and the
downsampled history — one row per slice, program and the whole tree per ``history_step_s``
(max and mean of process memory and CPU, the last of the counters), kept ``history_days``.
Alerts and mode changes are kept ``alert_days``.

A database that fails its integrity check is left untouched (as every store of the project
does) and the monitor goes on with one in memory; a write that fails (a full disk) is logged,
at most once a minute, and counted — the watchdog never stops for its record.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from services.monitor.psi import avg10
from services.monitor.sampler import Sample
from shared.storage.sqlite import MOVED_ASIDE, Checkpointer, Reader, open_db, rows

log = logging.getLogger("bdt.monitor")

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    subject TEXT NOT NULL, message TEXT NOT NULL, figures TEXT NOT NULL,
    notified INTEGER NOT NULL, sources TEXT NOT NULL DEFAULT 'monitor');
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
CREATE TABLE IF NOT EXISTS modes (
    ts INTEGER NOT NULL, mode TEXT NOT NULL, old TEXT NOT NULL, reason TEXT NOT NULL,
    memory_bytes INTEGER, cpu_pct REAL);
CREATE TABLE IF NOT EXISTS history (
    ts INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    memory_process_max INTEGER, memory_process_mean INTEGER, memory_page_cache INTEGER,
    memory_peak INTEGER, cap INTEGER, oom_kills INTEGER, cpu_cores_mean REAL,
    cpu_cores_max REAL, throttled INTEGER, psi_memory_some_avg10 REAL,
    psi_cpu_some_avg10 REAL, restarts INTEGER, state TEXT,
    PRIMARY KEY (name, kind, ts)) WITHOUT ROWID;   -- a slice and a program may share a name
"""
HISTORY_COLUMNS = ("ts", "name", "kind", "memory_process_max", "memory_process_mean",
                   "memory_page_cache", "memory_peak", "cap", "oom_kills", "cpu_cores_mean",
                   "cpu_cores_max", "throttled", "psi_memory_some_avg10", "psi_cpu_some_avg10",
                   "restarts", "state")
DAY_MS = 86_400_000


class MonitorQueries:
    """Every read of the monitor's database, on ``self.conn``: the monitor's ``MonitorDB``
    and, in other processes, ``MonitorReader`` (read-only) run the same queries."""

    conn: sqlite3.Connection

    def alerts(self, since_ms: int = 0, limit: int = 100, kind: str = "") -> list[dict[str, Any]]:
        """The newest ``limit`` alerts at or after ``since_ms``, oldest first."""
        found = self.conn.execute(
            "SELECT id, ts, kind, severity, subject, message, figures, notified, sources "
            "FROM alerts WHERE ts >= ? AND (? = '' OR kind = ?) ORDER BY id DESC LIMIT ?",
            (since_ms, kind, kind, limit)).fetchall()
        return [{"id": r[0], "ts": r[1], "kind": r[2], "severity": r[3], "subject": r[4],
                 "message": r[5], "figures": json.loads(r[6]), "notified": bool(r[7]),
                 "sources": r[8].split(",")} for r in reversed(found)]

    def modes(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest ``limit`` mode changes, oldest first."""
        found = self.conn.execute("SELECT ts, mode, old, reason, memory_bytes, cpu_pct FROM "
                                  "modes ORDER BY ts DESC LIMIT ?", (limit,)).fetchall()
        return [dict(zip(("ts", "mode", "old", "reason", "memory_bytes", "cpu_pct"), r,
                         strict=True)) for r in reversed(found)]

    def history(self, name: str, since_ms: int = 0, limit: int = 1440) -> list[dict[str, Any]]:
        """The newest ``limit`` history rows of ``name`` at or after ``since_ms``, oldest
        first."""
        found = self.conn.execute(
            f"SELECT {', '.join(HISTORY_COLUMNS)} FROM history WHERE name = ? AND ts >= ? "
            "ORDER BY ts DESC LIMIT ?", (name, since_ms, limit)).fetchall()
        return [dict(zip(HISTORY_COLUMNS, r, strict=True)) for r in reversed(found)]

    def resource_history(self, since_ms: int, bucket_ms: int) -> list[dict[str, Any]]:
        """The slices' and the tree's rows at or after ``since_ms`` in buckets of
        ``bucket_ms`` (``ts``: the bucket's start), by name then time: the max of process
        memory, page cache and cap, mean and max CPU cores, the OOM-kill counter."""
        return rows(self.conn.execute(
            "SELECT name, kind, (ts / ?) * ? AS ts, max(memory_process_max) AS memory,"
            " max(memory_page_cache) AS page_cache, max(cap) AS cap,"
            " avg(cpu_cores_mean) AS cpu, max(cpu_cores_max) AS cpu_max,"
            " max(oom_kills) AS oom_kills FROM history"
            " WHERE kind IN ('slice', 'tree') AND ts >= ?"
            " GROUP BY name, kind, (ts / ?) ORDER BY name, ts",
            (bucket_ms, bucket_ms, since_ms, bucket_ms)))

    def program_history(self, since_ms: int) -> list[dict[str, Any]]:
        """Per program since ``since_ms``, by name: its restart counter first and last seen
        (``restarts_first``, ``restarts``), peak process memory, its last row's time and
        state."""
        return rows(self.conn.execute(
            "SELECT name, min(restarts) AS restarts_first, max(restarts) AS restarts,"
            " max(memory_process_max) AS memory_peak, max(ts) AS last_ts,"
            " (SELECT state FROM history h2 WHERE h2.name = h.name AND"
            "  h2.kind = 'program' ORDER BY ts DESC LIMIT 1) AS state"
            " FROM history h WHERE kind = 'program' AND ts >= ?"
            " GROUP BY name ORDER BY name", (since_ms,)))


class MonitorReader(Reader, MonitorQueries):
    """The monitor's database read by another process (the dashboard): ``with
    MonitorReader.open(path) as monitor`` — read-only, one snapshot, never moved aside or
    made anew (``shared.storage.sqlite``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        super().__init__(db)
        self.conn = db


class MonitorDB(MonitorQueries):
    """Alerts, mode changes and history rows; every method commits what it wrote. The
    monitor's own, the one writer; its reads are ``MonitorQueries``'."""

    def __init__(self, path: Path, history_days: int, alert_days: int) -> None:
        self.path, self.history_days, self.alert_days = path, history_days, alert_days
        self.error = ""
        moved = len(MOVED_ASIDE)
        try:    # derived: a corrupt one is moved aside and made anew (shared/storage/stores.py)
            self.conn = open_db(path, synchronous="NORMAL", what="monitor database",
                                derived=True)
            if len(MOVED_ASIDE) > moved:
                aside = MOVED_ASIDE[-1]
                self.error = (f"monitor database {path} was unusable ({aside['reason']}): "
                              f"moved aside to {aside['moved_to']}, a new one made")
        except RuntimeError as exc:
            self.error = str(exc)
            log.error("%s; keeping this run's alerts and history in memory only", exc)
            self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.executescript(SCHEMA)
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(alerts)")}
        if "sources" not in columns:     # a database of a monitor that was the only source
            self.conn.execute("ALTER TABLE alerts ADD COLUMN sources TEXT NOT NULL "
                              "DEFAULT 'monitor'")
        self.checkpointer = Checkpointer(self.conn, path)
        self.next_prune = 0.0
        self.write_failures = 0
        self._warned_at = -1e9

    def _failed(self, what: str, exc: sqlite3.Error) -> None:
        self.write_failures += 1
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.error("%s not written to %s: %s (%d write(s) lost so far)", what, self.path,
                      exc, self.write_failures)

    def add_alert(self, ts_ms: int, kind: str, severity: str, subject: str, message: str,
                  figures: dict[str, Any], notified: bool,
                  sources: list[str] | tuple[str, ...] = ("monitor",)) -> int:
        """The alert's id (0 when it could not be written)."""
        try:
            cur = self.conn.execute(
                "INSERT INTO alerts (ts, kind, severity, subject, message, figures, notified, "
                "sources) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ts_ms, kind, severity, subject, message, json.dumps(figures, default=str),
                 int(notified), ",".join(sources)))
        except sqlite3.Error as exc:
            self._failed("an alert", exc)
            return 0
        return int(cur.lastrowid or 0)

    def merge_alert(self, alert_id: int, sources: list[str], figures: dict[str, Any]) -> None:
        """Alert ``alert_id`` seen by more sources, with their figures added."""
        try:
            self.conn.execute("UPDATE alerts SET sources = ?, figures = ? WHERE id = ?",
                              (",".join(sources), json.dumps(figures, default=str), alert_id))
        except sqlite3.Error as exc:
            self._failed("an alert's sources", exc)

    def add_mode(self, ts_ms: int, mode: str, old: str, reason: str, memory: int | None,
                 cpu_pct: float | None) -> None:
        try:
            self.conn.execute("INSERT INTO modes VALUES (?, ?, ?, ?, ?, ?)",
                              (ts_ms, mode, old, reason, memory, cpu_pct))
        except sqlite3.Error as exc:
            self._failed("a mode change", exc)

    def add_history(self, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(HISTORY_COLUMNS))
        try:
            self.conn.execute("BEGIN")
            self.conn.executemany(f"INSERT OR REPLACE INTO history VALUES ({marks})", rows)
            self.conn.execute("COMMIT")
            self.checkpointer.checkpoint()
        except sqlite3.Error as exc:
            self._failed(f"{len(rows)} history row(s)", exc)

    def prune(self, now_ms: int) -> int:
        """Delete what is past its keep; rows deleted. Runs at most once an hour."""
        if time.monotonic() < self.next_prune:
            return 0
        self.next_prune = time.monotonic() + 3600
        old = now_ms - self.alert_days * DAY_MS
        try:
            gone = self.conn.execute("DELETE FROM history WHERE ts < ?",
                                     (now_ms - self.history_days * DAY_MS,)).rowcount
            gone += self.conn.execute("DELETE FROM alerts WHERE ts < ?", (old,)).rowcount
            gone += self.conn.execute("DELETE FROM modes WHERE ts < ?", (old,)).rowcount
        except sqlite3.Error as exc:
            self._failed("the pruning", exc)
            return 0
        return gone

    def close(self) -> None:
        try:
            self.checkpointer.checkpoint()
        except sqlite3.Error as exc:
            log.warning("last checkpoint of %s failed: %s", self.path, exc)
        self.conn.close()


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class Downsampler:
    """Collects samples and turns each ``step_s`` of them into one history row per slice,
    program and the tree (written when the next step begins)."""

    def __init__(self, step_s: float) -> None:
        self.step_ms = int(step_s * 1000)
        self.step: int | None = None                  # start of the step being collected (ms)
        self.points: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

    def add(self, sample: Sample) -> list[tuple[Any, ...]]:
        """Rows of the step that ``sample`` closes (none while it is the same step)."""
        ts = int(sample.ts * 1000)
        step = ts - ts % self.step_ms
        rows = self.flush() if self.step is not None and step != self.step else []
        self.step = step
        for kind, name, sl in (("tree", sample.tree.slice, sample.tree),
                               *(("slice", n, s) for n, s in sample.slices.items())):
            self.points[(kind, name)].append({
                "memory": sl.memory_process, "page_cache": sl.memory_page_cache,
                "peak": sl.memory_peak, "cap": sl.cap_bytes, "oom": sl.oom_kills,
                "cpu": sl.cpu_cores, "throttled": sl.cpu_throttled,
                "psi_memory": avg10(sl.pressure, "memory"), "psi_cpu": avg10(sl.pressure, "cpu"),
                "restarts": None, "state": None})
        for name, p in sample.programs.items():
            self.points[("program", name)].append({
                "memory": p.memory_process, "page_cache": None, "peak": None, "cap": None,
                "oom": None, "cpu": p.cpu_cores, "throttled": None, "psi_memory": None,
                "psi_cpu": None, "restarts": p.restarts, "state": p.state})
        return rows

    def flush(self) -> list[tuple[Any, ...]]:
        """The rows of the step collected so far (and start afresh)."""
        rows = []
        for (kind, name), points in self.points.items():
            def known(key: str, pts: list[dict[str, Any]] = points) -> list[Any]:
                return [p[key] for p in pts if p[key] is not None]

            memory, cpu, throttled = known("memory"), known("cpu"), known("throttled")
            last = points[-1]
            mean = _mean(memory)
            rows.append((
                self.step, name, kind, max(memory) if memory else None,
                None if mean is None else int(mean), last["page_cache"], last["peak"],
                last["cap"], last["oom"], _mean(cpu), max(cpu) if cpu else None,
                (throttled[-1] - throttled[0]) if throttled else None,
                max(known("psi_memory"), default=None), max(known("psi_cpu"), default=None),
                last["restarts"], last["state"]))
        self.points.clear()
        return rows
