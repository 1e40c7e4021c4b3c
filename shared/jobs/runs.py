"""Job runs: one record per scheduled slot, per ``bdt job run`` and per program started by hand,
in ``<var>/data/jobs.db`` (the scheduler writes; the CLI and the dashboard read).

A run is ``queued`` → ``running`` → one outcome: ``ok | failed | timed_out | oom_killed |
cancelled``; a slot missed past the grace is recorded ``skipped``. (job, slot) is unique: a slot
can never get two runs, whatever fires twice (arq's ``JobStatus``/``JobResult`` idea).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.storage.sqlite import (
    Checkpointer,
    FileIdentity,
    Reader,
    open_db,
    renew_if_replaced,
)

STATES = ("queued", "running", "ok", "failed", "timed_out", "oom_killed", "cancelled",
          "skipped")
OUTCOMES = STATES[2:]

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, slot TEXT NOT NULL,
    trigger TEXT NOT NULL, state TEXT NOT NULL, queued_at REAL NOT NULL, started_at REAL,
    ended_at REAL, duration_s REAL, exit_status INTEGER, pid INTEGER, peak_bytes INTEGER,
    cap_bytes INTEGER, oom_kills INTEGER, report TEXT, reason TEXT,
    UNIQUE (job, slot));
CREATE TABLE IF NOT EXISTS scheduler_seen (
    id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""


class JobRunError(RuntimeError):
    """The job-run database cannot be used (the message names it and the way out)."""


@dataclass
class JobRun:
    id: int
    job: str
    slot: str
    trigger: str
    state: str
    queued_at: float
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    exit_status: int | None = None
    pid: int | None = None
    peak_bytes: int | None = None
    cap_bytes: int | None = None
    oom_kills: int | None = None       # running: the slice's count at the start; then the
                                       # kills during the run
    report: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


COLUMNS = tuple(JobRun.__dataclass_fields__)


class JobRunQueries:
    """Every read of the job-run records, on ``self.db``: the scheduler's ``JobRuns`` and, in
    other processes, ``JobRunsReader`` (read-only) run the same queries."""

    db: sqlite3.Connection

    def seen_at(self) -> float | None:
        """When the scheduler was last seen alive (epoch s), or None."""
        row = self.db.execute("SELECT at FROM scheduler_seen WHERE id = 1").fetchone()
        return None if row is None else row[0]

    def get(self, run_id: int) -> JobRun | None:
        row = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM job_runs WHERE id = ?",
                              (run_id,)).fetchone()
        return None if row is None else JobRun(*row)

    def in_state(self, *states: str) -> list[JobRun]:
        """Runs in ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM job_runs WHERE state IN "
                               f"({marks}) ORDER BY id", states).fetchall()
        return [JobRun(*r) for r in rows]

    def history(self, limit: int = 50, job: str | None = None) -> list[JobRun]:
        """The newest ``limit`` runs (of ``job``), newest first."""
        q = f"SELECT {', '.join(COLUMNS)} FROM job_runs"
        args: list[Any] = []
        if job:
            q, args = q + " WHERE job = ?", [job]
        rows = self.db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [JobRun(*r) for r in rows]

    def last_outcome(self, job: str) -> JobRun | None:
        marks = ",".join("?" * len(OUTCOMES))
        row = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM job_runs WHERE job = ? AND "
                              f"state IN ({marks}) ORDER BY id DESC LIMIT 1",
                              (job, *OUTCOMES)).fetchone()
        return None if row is None else JobRun(*row)


class JobRunsReader(Reader, JobRunQueries):
    """The job runs read by another process (the dashboard): ``with JobRunsReader.open(path)
    as runs`` — read-only, one snapshot (``shared.storage.sqlite``)."""


class JobRuns(JobRunQueries):
    """The job-run records (see module doc), written by the scheduler alone; its reads are
    ``JobRunQueries``'. Not thread-safe: the scheduler writes from its main loop only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_db(path, synchronous="FULL", what="job-run database", error=JobRunError)
        self.db.executescript(SCHEMA)
        self._checkpointer = Checkpointer(self.db, path)
        self.identity = FileIdentity(path)

    def _renew(self) -> None:
        """Before a write: a file deleted or replaced under the scheduler is rewritten from the
        open copy (``renew_if_replaced``), so the run being recorded is not lost with it."""
        self.db, self.identity, note = renew_if_replaced(
            self.db, self.identity, synchronous="FULL", what="job-run database",
            error=JobRunError)
        if note:
            self._checkpointer = Checkpointer(self.db, self.path)

    def close(self) -> None:
        self._checkpointer.checkpoint()
        self.db.close()

    def mark_seen(self, at: float) -> None:
        """The scheduler was alive at ``at`` (epoch s): a restart knows since when it was
        down. Checkpoints too (these writes are the most frequent)."""
        self._renew()
        self.db.execute("INSERT INTO scheduler_seen (id, at) VALUES (1, ?) "
                        "ON CONFLICT (id) DO UPDATE SET at = excluded.at", (at,))
        self._checkpointer.checkpoint()

    def add(self, job: str, slot: str, trigger: str, state: str = "queued",
            reason: str | None = None) -> JobRun | None:
        """A new run; None when (job, slot) has one already (a slot runs once)."""
        self._renew()
        now = time.time()
        try:
            cur = self.db.execute(
                "INSERT INTO job_runs (job, slot, trigger, state, queued_at, ended_at, reason) "
                "VALUES (?,?,?,?,?,?,?)", (job, slot, trigger, state, now,
                                         now if state == "skipped" else None, reason))
        except sqlite3.IntegrityError:
            return None
        return self.get(cur.lastrowid)

    def update(self, run_id: int, **fields: Any) -> None:
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown job-run field(s) {sorted(unknown)}")
        self._renew()
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE job_runs SET {sets} WHERE id = ?", (*fields.values(), run_id))
