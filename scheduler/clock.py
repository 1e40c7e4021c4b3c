"""The clock: APScheduler (3.x) with its SQLite job store fires each job at its slots; a firing
only becomes a queued run (or a skipped one) in the job-run records — see service.py.

APScheduler runs the job function in its own threads and does not tell it the slot's time, so
the function does nothing and listeners hand (job, fired|missed, scheduled time) over a queue
to the main thread, which writes the records (``take_firings``).

Coalescing (on) runs a job once for all the slots it missed while the scheduler was down, and
forgets the others; ``start`` records each of those as ``skipped``, so every slot has exactly
one outcome.

The job store keeps each job (trigger, grace, …) across restarts; at start a stored job is kept
only when it equals the configured one as a whole — the trigger's ``repr`` names its timezone,
which its ``str`` leaves out — and is replaced otherwise (a new timezone moves the next run at
once).

The job store is derived data: one that cannot be read is moved aside (renamed
``scheduler.db.corrupt-<UTC time>``, never deleted), named in one log line, and built anew from
config; the scheduler goes on. The job-run records (jobs.db) are history: those are never moved
(see ``shared/jobs/runs.py``).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.jobs.runs import JobRuns
from shared.jobs.schedule import JobSpec, slot_name, zone

log = logging.getLogger("bdt.scheduler")
LATE_S = 60          # a firing this late (or more) is a catch-up of a slot missed while down
FIRED = "scheduler.clock:fired"


def fired() -> None:
    """What APScheduler runs at a slot: nothing (the listeners record the run)."""


class JobClock:
    """``jobs`` fired in ``timezone`` from a job store at ``store``; records into ``runs``.
    ``now`` is the clock (tests inject one; APScheduler's own reads of the time are patched
    there too)."""

    def __init__(self, jobs: dict[str, JobSpec], runs: JobRuns, store: Path, timezone: str,
                 grace_s: float, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                 ) -> None:
        self.jobs, self.runs, self.store = jobs, runs, store
        self.timezone, self.grace_s, self.now = timezone, grace_s, now
        self.firings: queue.Queue[tuple[str, str, datetime]] = queue.Queue()
        self.sched: Any = None

    def start(self) -> None:
        """Open the job store (moved aside and rebuilt when unreadable), make its jobs the
        configured ones, and start firing."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            sched, stored = self._open()
        except (sqlite3.DatabaseError, SQLAlchemyError) as exc:
            self._move_aside(getattr(exc, "orig", None) or exc)
            sched, stored = self._open()
        for job_id in stored:
            if job_id not in self.jobs:
                log.info("stored job %s is no longer configured: removed", job_id)
                sched.remove_job(job_id)
        for spec in self.jobs.values():
            existing = stored.get(spec.name)
            if existing is not None:
                have, wanted = self._shape(existing), self._wanted(spec)
                if have == wanted:
                    self._skip_coalesced(spec, existing.next_run_time)
                    continue   # kept: its stored next run time makes a missed slot due now
                log.warning("%s: the stored job differs from config (%s): replaced", spec.name,
                            "; ".join(f"{k} {have[k]} → {wanted[k]}" for k in wanted
                                      if have[k] != wanted[k]))
            job = sched.add_job(fired, spec.trigger(), id=spec.name, name=spec.name,
                                replace_existing=True)
            log.info("%s: next run %s", spec.name, job.next_run_time)
        sched.resume()
        self.sched = sched

    def _open(self) -> tuple[Any, dict[str, Any]]:
        """A paused scheduler on the job store, and the jobs stored there by id. Raises
        sqlite3's or SQLAlchemy's DatabaseError when the store cannot be read."""
        from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        self.store.parent.mkdir(parents=True, exist_ok=True)
        probe = sqlite3.connect(self.store)      # a file that is not a database fails here,
        try:                                     # before SQLAlchemy's multi-line traceback
            check = probe.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            probe.close()
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        store = SQLAlchemyJobStore(url=f"sqlite:///{self.store}")
        sched = BackgroundScheduler(
            jobstores={"default": store},
            # on purpose: APScheduler's default grace is 1 s, which silently drops a late run
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(self.grace_s)},
            timezone=zone(self.timezone))
        sched.add_listener(lambda ev: self.firings.put((ev.job_id, "fired",
                                                        ev.scheduled_run_time)),
                           EVENT_JOB_EXECUTED)
        sched.add_listener(lambda ev: self.firings.put((ev.job_id, "missed",
                                                        ev.scheduled_run_time)),
                           EVENT_JOB_MISSED)
        try:
            sched.start(paused=True)
            return sched, {job.id: job for job in sched.get_jobs()}
        except Exception:
            store.shutdown()
            raise

    def _move_aside(self, why: BaseException) -> None:
        """Rename the unreadable job store (and its journal) with a UTC time suffix: kept for
        a look, out of the way of the new one."""
        stamp = self.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        dest = self.store.with_name(f"{self.store.name}.corrupt-{stamp}")
        n = 1
        while dest.exists():
            n += 1
            dest = self.store.with_name(f"{self.store.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-journal", "-wal", "-shm"):
            src = self.store.with_name(self.store.name + suffix)
            if src.exists():
                src.rename(dest.with_name(dest.name + suffix))
        reason = (str(why).strip().splitlines() or [type(why).__name__])[0]
        log.error("job store %s is unreadable (%s): moved aside to %s and rebuilt from "
                  "config (it holds only each job's schedule and next run time)",
                  self.store, reason, dest)

    def _wanted(self, spec: JobSpec) -> dict[str, Any]:
        """The configured job, as compared with a stored one."""
        return {"func": FIRED, "trigger": repr(spec.trigger()), "coalesce": True,
                "max_instances": 1, "misfire_grace_time": int(self.grace_s)}

    @staticmethod
    def _shape(job: Any) -> dict[str, Any]:
        """A stored job, as compared with the configured one: whole (``repr`` of the trigger
        names its timezone, its ``str`` does not)."""
        return {"func": job.func_ref, "trigger": repr(job.trigger), "coalesce": job.coalesce,
                "max_instances": job.max_instances, "misfire_grace_time": job.misfire_grace_time}

    def _skip_coalesced(self, spec: JobSpec, stored: datetime | None) -> None:
        """Slots between the stored next run and now, but the last: coalescing forgets them."""
        now = self.now()
        trigger, slots = spec.trigger(), []
        when = stored
        while when is not None and when <= now and len(slots) < 1000:
            slots.append(when)
            when = trigger.get_next_fire_time(when, when + timedelta(seconds=1))
        for when in slots[:-1]:
            run = self.runs.add(spec.name, slot_name(when, spec.timezone), "scheduled",
                                "skipped", reason="coalesced: the scheduler was down then; "
                                                  "only the latest missed slot may run")
            if run:
                log.warning("%s slot %s skipped (%s)", spec.name, run.slot, run.reason)

    def take_firings(self) -> None:
        """Turn the firings handed over by APScheduler into run records (main thread)."""
        while True:
            try:
                job, what, when = self.firings.get_nowait()
            except queue.Empty:
                return
            spec = self.jobs.get(job)
            if spec is None:
                continue
            slot = slot_name(when, spec.timezone)
            late = (self.now() - when).total_seconds()
            if what == "missed":
                run = self.runs.add(job, slot, "scheduled", "skipped",
                                    reason=f"missed by {late / 60:.0f} min: the scheduler was "
                                           "down past scheduler.misfire_grace_s")
                if run:
                    log.warning("%s slot %s skipped: %s", job, slot, run.reason)
                continue
            run = self.runs.add(job, slot, "catch_up" if late > LATE_S else "scheduled")
            if run:
                log.info("%s slot %s queued (%s)", job, slot, run.trigger)
            else:
                log.info("%s slot %s fired again: it has its run already", job, slot)

    def next_run(self, job: str) -> datetime | None:
        found = self.sched.get_job(job) if self.sched else None
        return found.next_run_time if found else None

    def shutdown(self) -> None:
        if self.sched is not None:
            self.sched.shutdown(wait=False)
            self.sched = None
