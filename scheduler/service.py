"""scheduler: APScheduler fires the batch jobs at their slots; the scheduler never runs the work
itself. It records a run, asks supervisord (XML-RPC, its private socket) to start the batch
program, watches it, enforces the time limit (stop, then kill after a grace), reads the batch
slice's peak memory and OOM kills from the cgroup, and records one outcome:
``ok | failed | timed_out | oom_killed | cancelled`` (``skipped`` for a slot missed past the
grace).

- **One outcome per slot.** A firing only queues a run under its slot's name (local date and
  time); a slot that fired already is not queued again. Runs start one at a time, oldest first:
  a job due while another runs waits its turn.
- **Missed slots.** APScheduler's SQLite job store remembers each job's next run across
  restarts; of the slots missed while the scheduler was down or the machine asleep, the
  latest runs once on return within ``scheduler.misfire_grace_s`` (like a systemd timer's
  Persistent=true), and every other is recorded ``skipped`` with the span (clock.py).
- **Stores.** The job store is derived from config: a stored job that differs from the
  configured one in anything (its timezone too) is replaced, and an unreadable store is moved
  aside and rebuilt. The job-run records are history: unreadable, the scheduler refuses to
  start (``__main__.py``), naming the file and the way out.
- **By hand.** ``bdt job run NAME`` queues a run now; a batch program started with supervisorctl
  is noticed and recorded as a ``by_hand`` run.
- **Restarts.** A run left ``running`` by a scheduler that died is adopted if its program still
  runs, else closed with the program's exit status (never left running).
- **Critical mode.** A ``mode`` event ``critical`` cancels the running job (reason: critical mode).

APScheduler 3's BackgroundScheduler (its own thread) rather than BlockingScheduler: this
process also serves the bus in its main thread. Every database write happens there too: the
scheduler thread only hands firings over a queue.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from scheduler.clock import JobClock
from scheduler.watch import SLICE, BatchWatch
from shared.bus.service import Service
from shared.bus.streams import StreamMessage
from shared.config import Config
from shared.jobs.runs import JobRun, JobRuns
from shared.jobs.schedule import JOBS, JobSpec, job_table
from shared.protocol import errors, scheduler
from shared.protocol.alerts import raise_alert
from shared.protocol.cache_keys import SCHEDULER_CURRENT, SCHEDULER_JOBS, SCHEDULER_TTL_S
from shared.protocol.events import EventError, event, parse_event


class SchedulerService(Service):
    name = "scheduler"
    summary = "APScheduler clock: the 03:00 backtest and the Sunday walk-forward, one at a time"
    ops = scheduler.OPS
    publishes = True
    streams_in = ("events",)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.tick_interval_s = cfg.get("scheduler.poll_interval_s")
        self.jobs: dict[str, JobSpec] = job_table(cfg)
        self.runs = JobRuns(cfg.var_dir / "data" / "jobs.db")
        self.watch = BatchWatch(cfg, self.runs)
        self.current: JobRun | None = None
        self.clock = JobClock(self.jobs, self.runs, cfg.var_dir / "data" / "scheduler.db",
                              cfg.get("scheduler.timezone"), cfg.get("scheduler.misfire_grace_s"))
        self.clock.start()
        self._reconcile()
        self.snapshot_at, self.snapshot_state = -1e9, None

    # --- the worker (main thread) ----------------------------------------------------------
    def tick(self) -> None:
        self._work()
        self._snapshot()

    def _snapshot(self) -> None:
        """``scheduler:jobs`` and ``scheduler:current`` in the cache (TTL 120 s) for ``bdt
        status`` and the dashboard: on a change, else every 30 s. A cache that is down costs
        one 300 ms timeout, never a job."""
        state = (self.current.id, self.current.state) if self.current else None
        if state == self.snapshot_state and time.monotonic() - self.snapshot_at < 30:
            return
        self.snapshot_state, self.snapshot_at = state, time.monotonic()
        from shared.bus.cache_client import CacheClient
        from shared.bus.client import BusError

        client = CacheClient(self.cfg, timeout_ms=300, retries=0)
        try:
            client.mset({SCHEDULER_JOBS.name: self.op_jobs({}),
                         SCHEDULER_CURRENT.name: self.current.to_dict() if self.current else None},
                        ttl=SCHEDULER_TTL_S)
        except BusError as exc:
            self.log.debug("cache snapshot not written: %s", exc)
        finally:
            client.close()

    def _work(self) -> None:
        self.clock.take_firings()
        if self.current is not None:
            done = self.watch.check(self.current, self.jobs[self.current.job].limit_s)
            if done is not None:
                self._finish(done)
            return
        adopted = self.watch.started_by_hand(self.runs)
        if adopted is not None:
            self.current = adopted
            self.log.info("%s started by hand: recorded as run %d", adopted.job, adopted.id)
            return
        queued = self.runs.in_state("queued")
        if queued:
            self._start(queued[0])

    def _start(self, run: JobRun) -> None:
        started = self.watch.start(run)
        self.current = self.runs.get(run.id)
        if not started:
            self._finish(self.current)
            return
        self.publish("events", event("job_started", job=run.job, run_id=run.id,
                                     trigger=run.trigger, slot=run.slot))

    def _finish(self, run: JobRun | None) -> None:
        self.current = None
        if run is None:
            return
        run = self.runs.get(run.id) or run
        self.log.info("%s run %d: %s (%s)", run.job, run.id, run.state, run.reason or "")
        self.publish("events", event("job_finished", job=run.job, run_id=run.id,
                                     outcome=run.state, duration_s=run.duration_s or 0.0))
        if run.state == "oom_killed":       # subject: the slice, as the monitor's (one alert)
            raise_alert(self, "oom_kill", SLICE, f"{run.job} was OOM-killed at "
                        f"{(run.peak_bytes or 0) >> 20} MiB (cap {(run.cap_bytes or 0) >> 20} "
                        f"MiB)", memory_peak=run.peak_bytes, cap_bytes=run.cap_bytes,
                        job=run.job, run_id=run.id)

    def _reconcile(self) -> None:
        """A run a dead scheduler left running: adopted, or closed with what supervisord
        knows — never left running forever."""
        for run in self.runs.in_state("running"):
            if self.watch.still_running(run):
                self.current = run
                self.log.info("%s run %d still runs: watching it again", run.job, run.id)
            else:
                self.watch.close_after_restart(run)
                self.log.warning("%s run %d ended while the scheduler was down: %s", run.job,
                                 run.id, (self.runs.get(run.id) or run).state)

    def on_stream(self, msg: StreamMessage) -> None:
        try:
            kind, fields = parse_event(msg.fields)
        except EventError:
            return
        if kind == "mode" and fields["mode"] == "critical" and self.current is not None:
            self.log.warning("critical resource mode: cancelling %s run %d", self.current.job,
                             self.current.id)
            self.watch.cancel(self.current, "critical resource mode")

    def close(self) -> None:
        self.clock.shutdown()
        self.runs.close()

    # --- ops -------------------------------------------------------------------------------
    def service_status(self) -> dict[str, Any]:
        return {"running": self.current.to_dict() if self.current else None,
                "queued": [r.to_dict() for r in self.runs.in_state("queued")],
                "jobs": self.op_jobs({})}

    def op_jobs(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for spec in self.jobs.values():
            nxt = self.clock.next_run(spec.name)
            last = self.runs.last_outcome(spec.name)
            out.append({"job": spec.name, "schedule": spec.schedule, "timezone": spec.timezone,
                        "limit_s": spec.limit_s,
                        "next_run": nxt.isoformat() if nxt else None,
                        "last": last.to_dict() if last else None})
        return out

    def op_run(self, args: dict[str, Any]) -> dict[str, Any]:
        job = args["job"]
        if job not in JOBS:
            raise errors.MessageError(errors.BAD_ARGS, f"unknown job {job!r}; jobs: "
                                                       f"{', '.join(JOBS)}")
        slot = f"manual {datetime.now(UTC).isoformat(timespec='milliseconds')}"
        run = self.runs.add(job, slot, "manual")
        assert run is not None
        self.log.info("%s queued by the operator (run %d)", job, run.id)
        return run.to_dict()

    def op_history(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.runs.history(args["limit"], args["job"])]

    def op_cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        run_id = args["run_id"]
        run = self.current if run_id is None else self.runs.get(run_id)
        if run is None:
            raise errors.MessageError(errors.NOT_FOUND, "no such run" if run_id else
                                      "no job is running")
        if run.state == "queued":
            self.runs.update(run.id, state="cancelled", ended_at=time.time(),
                             reason=args["reason"])
        elif self.current is not None and run.id == self.current.id:
            self.watch.cancel(run, args["reason"])
        else:
            raise errors.MessageError(errors.BAD_ARGS, f"run {run.id} is {run.state}: only a "
                                                       "queued or running run can be cancelled")
        return (self.runs.get(run.id) or run).to_dict()
