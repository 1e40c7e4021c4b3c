"""The clock: APScheduler (3.x) with its SQLite job store fires each job at its slots; a firing
only becomes a queued run (or a skipped one) in the job-run records — see service.py.

APScheduler runs the job function in its own threads and does not tell it the slot's time, so
the function does nothing and listeners hand (job, fired|missed, scheduled time) over a queue
to the main thread, which writes the records (``take_firings``).

- **The stored job is the configured one.** The job store keeps each job (trigger, grace, …)
  across restarts; at start a stored job is kept only when it equals the configured one as a
  whole — the trigger's ``repr`` names its timezone, which its ``str`` leaves out — and is
  replaced otherwise (a new timezone moves the next run at once).
- **The job store is derived data.** One that cannot be read is moved aside (renamed
  ``scheduler.db.corrupt-<UTC time>``, never deleted), named in one log line, and built anew
  from config; the scheduler goes on. The job-run records (jobs.db) are history: those are
  never moved (see ``shared/jobs/runs.py``).
- **Every slot gets one outcome.** Coalescing (on) makes APScheduler fire a job once for all
  the slots it missed, and say nothing of the others. The main thread knows each job's next
  slot (``expected``); a firing later than that records every slot in between ``skipped``,
  with the span the scheduler was not looking: down (from its last heartbeat in jobs.db to its
  start) or asleep. A suspend looks, from inside, like the wall clock running ahead of the
  monotonic one (which stops while the machine sleeps) between two ticks; ``look`` notices it
  and wakes APScheduler at once, whose own wait is monotonic and would otherwise run on past
  the misfire grace.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.jobs.runs import JobRuns
from shared.jobs.schedule import JobSpec, slot_name, zone
from shared.storage.sqlite import MOVED_ASIDE, move_aside

log = logging.getLogger("bdt.scheduler")
LATE_S = 60          # a firing this late (or more) is a catch-up of a slot missed while down
JUMP_S = 30.0        # wall clock ahead of the monotonic one by this between two looks: a sleep
HEARTBEAT_S = 60.0   # how often the scheduler notes in jobs.db that it is alive
MAX_MISSED = 1000    # slots recorded for one gap, at most (a daily job: nearly three years)
FIRED = "scheduler.clock:fired"


def fired() -> None:
    """What APScheduler runs at a slot: nothing (the listeners record the run)."""


class JobClock:
    """``jobs`` fired in ``timezone`` from a job store at ``store``; records into ``runs``.
    ``now`` and ``monotonic`` are the clocks (tests inject them; APScheduler's own reads of the
    time are patched there too)."""

    def __init__(self, jobs: dict[str, JobSpec], runs: JobRuns, store: Path, timezone: str,
                 grace_s: float, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.jobs, self.runs, self.store = jobs, runs, store
        self.timezone, self.grace_s, self.now, self.monotonic = timezone, grace_s, now, monotonic
        self.firings: queue.Queue[tuple[str, str, datetime]] = queue.Queue()
        self.sched: Any = None
        self.expected: dict[str, datetime | None] = {}   # each job's next slot, as last known
        self.gaps: list[tuple[datetime, datetime]] = []  # spans the scheduler did not look
        self.looked: tuple[datetime, float] | None = None  # (wall, monotonic) of the last look
        self.beat_at = -1e18                             # monotonic time of the last heartbeat

    # --- start: the job store, checked against config ------------------------------------
    def start(self) -> None:
        """Open the job store (moved aside and rebuilt when unreadable), make its jobs the
        configured ones, and start firing."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            sched, stored = self._open()
        except (sqlite3.DatabaseError, SQLAlchemyError) as exc:
            self._move_aside(getattr(exc, "orig", None) or exc)
            sched, stored = self._open()
        now, seen = self.now(), self.runs.seen_at()
        down_from = None if seen is None else datetime.fromtimestamp(seen, UTC)
        if down_from is not None and down_from < now:
            self.gaps.append((down_from, now))
        for job_id in stored:
            if job_id not in self.jobs:
                log.info("stored job %s is no longer configured: removed", job_id)
                sched.remove_job(job_id)
        for spec in self.jobs.values():
            self.expected[spec.name] = self._install(sched, spec, stored.get(spec.name), now,
                                                     down_from)
        self.looked = (now, self.monotonic())
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
        """Rename the unreadable job store (and its journal) ``scheduler.db.corrupt-<UTC
        time>``: kept for a look, out of the way of the new one; one log line."""
        moved = move_aside(self.store)
        reason = (str(why).strip().splitlines() or [type(why).__name__])[0]
        log.error("job store %s is unreadable (%s): moved aside to %s and rebuilt from "
                  "config (it holds only each job's schedule and next run time)",
                  self.store, reason, moved)
        MOVED_ASIDE.append({"what": "APScheduler job store", "path": str(self.store),
                            "moved_to": str(moved), "reason": reason})

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

    def _install(self, sched: Any, spec: JobSpec, stored: Any, now: datetime,
                 down_from: datetime | None) -> datetime | None:
        """Keep the stored job when it is the configured one, else replace it; its next slot.
        A replaced job's slots missed while the scheduler was down are recorded skipped; a
        job missing from the store (new, or the store rebuilt) starts from the last heartbeat,
        so its slots missed while down catch up or are skipped as a stored one's would."""
        first = None
        if stored is None and down_from is not None:
            first = spec.trigger().get_next_fire_time(None, down_from)
        elif stored is not None:
            have, wanted = self._shape(stored), self._wanted(spec)
            if have == wanted:
                return stored.next_run_time      # a slot missed while down is due at once
            log.warning("%s: the stored job differs from config (%s): replaced", spec.name,
                        "; ".join(f"{k} {have[k]} → {wanted[k]}" for k in wanted
                                  if have[k] != wanted[k]))
            if stored.next_run_time is not None:
                self._skip(spec.name, stored.trigger, stored.next_run_time, now,
                           "; the schedule has changed since")
        extra = {"next_run_time": first} if first is not None and first <= now else {}
        job = sched.add_job(fired, spec.trigger(), id=spec.name, name=spec.name,
                            replace_existing=True, **extra)
        log.info("%s: next run %s", spec.name, job.next_run_time)
        return job.next_run_time

    # --- the main thread's work ----------------------------------------------------------
    def look(self) -> None:
        """Once a tick: notice a sleep (the wall clock ran ahead of the monotonic one) and
        wake APScheduler then, and note in jobs.db every ``HEARTBEAT_S`` that we are alive."""
        wall, mono = self.now(), self.monotonic()
        if self.looked is not None:
            ahead = (wall - self.looked[0]).total_seconds() - (mono - self.looked[1])
            if ahead > JUMP_S:
                self.gaps.append((self.looked[0], wall))
                log.warning("the wall clock ran %s ahead of the monotonic clock since %s: the "
                            "machine slept (or the clock was set); looking at the schedule now",
                            timedelta(seconds=round(ahead)), self.looked[0].isoformat())
                if self.sched is not None:
                    self.sched.wakeup()
        self.looked = (wall, mono)
        if mono - self.beat_at >= HEARTBEAT_S:
            self.runs.mark_seen(wall.timestamp())
            self.beat_at = mono

    def take_firings(self) -> None:
        """Turn the firings handed over by APScheduler into run records (main thread), after
        recording as skipped every slot a firing jumped over."""
        self.look()
        while True:
            try:
                job, what, when = self.firings.get_nowait()
            except queue.Empty:
                return
            spec = self.jobs.get(job)
            if spec is None:
                continue
            trigger = spec.trigger()
            expected = self.expected.get(job)
            if expected is not None:
                self._skip(job, trigger, expected, when, "; only the latest missed slot may "
                                                         "catch up")
            self.expected[job] = trigger.get_next_fire_time(when, when + timedelta(seconds=1))
            self._record(spec, what, when)

    def _record(self, spec: JobSpec, what: str, when: datetime) -> None:
        slot = slot_name(when, spec.timezone)
        late = (self.now() - when).total_seconds()
        if what == "missed":
            run = self.runs.add(spec.name, slot, "scheduled", "skipped",
                                reason=f"{self.why(when)}; {late / 60:.0f} min late, past "
                                       f"scheduler.misfire_grace_s ({self.grace_s:.0f} s)")
            if run:
                log.warning("%s slot %s skipped: %s", spec.name, slot, run.reason)
            return
        run = self.runs.add(spec.name, slot, "catch_up" if late > LATE_S else "scheduled")
        if run:
            log.info("%s slot %s queued (%s)", spec.name, slot, run.trigger)
        else:
            log.info("%s slot %s fired again: it has its run already", spec.name, slot)

    def _skip(self, job: str, trigger: Any, start: datetime, end: datetime, why: str) -> None:
        """Record ``trigger``'s slots from ``start`` up to (not including) ``end`` skipped."""
        when, n = start, 0
        while when is not None and when.timestamp() < end.timestamp() and n < MAX_MISSED:
            run = self.runs.add(job, slot_name(when, str(trigger.timezone)), "scheduled",
                                "skipped", reason=self.why(when) + why)
            if run:
                log.warning("%s slot %s skipped: %s", job, run.slot, run.reason)
            when, n = trigger.get_next_fire_time(when, when + timedelta(seconds=1)), n + 1

    def why(self, when: datetime) -> str:
        """Why the slot at ``when`` was missed: the span the scheduler was not looking."""
        tz = zone(self.timezone)
        for start, end in reversed(self.gaps):
            if start <= when <= end:
                return (f"missed: machine asleep or scheduler down from "
                        f"{start.astimezone(tz):%Y-%m-%d %H:%M} to "
                        f"{end.astimezone(tz):%Y-%m-%d %H:%M} ({self.timezone})")
        return (f"missed: machine asleep or scheduler down at "
                f"{when.astimezone(tz):%Y-%m-%d %H:%M} ({self.timezone})")

    def next_run(self, job: str) -> datetime | None:
        found = self.sched.get_job(job) if self.sched else None
        return found.next_run_time if found else None

    def shutdown(self) -> None:
        """Stop firing; the last heartbeat is now (a restart's gap starts here)."""
        if self.sched is not None:
            self.sched.shutdown(wait=False)
            self.sched = None
            self.runs.mark_seen(self.now().timestamp())
