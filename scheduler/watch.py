"""Starting, watching and stopping one batch program through supervisord, and reading its
outcome: exit status, the batch slice's peak memory and OOM kills (cgroup), its report.

Exit statuses of the batch programs (services/batch): 0 ok, 124 its own watchdog, 4 out of
memory under the cap (MemoryExhausted), 3 not built, anything else failed.
"""

from __future__ import annotations

import logging
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from shared.config import Config
from shared.jobs.runs import JobRun, JobRuns
from shared.jobs.schedule import JOBS
from shared.resources import cgexec, supervisor
from shared.resources.cgroup import reset_v1_peak

log = logging.getLogger("bdt.scheduler")
RUNNING_STATES = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")
EXIT_REASONS = {124: ("timed_out", "stopped by its own watchdog (its time limit + "
                                   "scheduler.stop_grace_s)"),
                4: ("failed", "out of memory under the batch slice's cap (MemoryExhausted)"),
                3: ("failed", "the program is not built yet")}
SLICE = "batch"


class BatchWatch:
    def __init__(self, cfg: Config, runs: JobRuns) -> None:
        self.cfg, self.runs = cfg, runs
        self.grace_s = cfg.get("scheduler.stop_grace_s")
        self.stops: dict[int, tuple[str, str, float]] = {}    # run id → (outcome, reason, at)

    # --- supervisord and the slice ---------------------------------------------------------
    def _rpc(self) -> Any:
        return supervisor.connect(self.cfg).supervisor

    def _info(self, job: str) -> dict[str, Any] | None:
        try:
            return self._rpc().getProcessInfo(f"{supervisor.GROUP}:{job}")
        except (OSError, xmlrpc.client.Fault) as exc:
            log.warning("supervisord: %s: %s", job, exc)
            return None

    def _slice(self) -> Any:
        backend = cgexec.open_tree(self.cfg, from_supervisor=True, create=False)
        return backend, backend.stats(SLICE)

    def _reset_peak(self) -> None:
        """Restart the batch slice's peak (cgroup v1 only; see reset_v1_peak)."""
        backend, _ = self._slice()
        path = backend.slice_paths(SLICE).get("memory")
        if path is not None:
            reset_v1_peak(Path(path))

    # --- a run -----------------------------------------------------------------------------
    def start(self, run: JobRun) -> bool:
        """Start ``run``'s program; False (the run recorded failed) when supervisord will not."""
        self._reset_peak()
        oom_before = self._slice()[1].oom_kills or 0
        now = time.time()
        try:
            self._rpc().startProcess(f"{supervisor.GROUP}:{run.job}", False)
        except (OSError, xmlrpc.client.Fault) as exc:
            self.runs.update(run.id, state="failed", started_at=now, ended_at=now,
                             duration_s=0.0, reason=f"supervisord did not start it: {exc}")
            return False
        info = self._info(run.job) or {}
        # while it runs, oom_kills holds the slice's count at the start (a restarted scheduler
        # needs it too); at the end, the kills during the run
        self.runs.update(run.id, state="running", started_at=now, pid=info.get("pid") or None,
                         oom_kills=oom_before)
        log.info("%s run %d started (pid %s)", run.job, run.id, info.get("pid"))
        return True

    def check(self, run: JobRun, limit_s: float) -> JobRun | None:
        """Look at a running run: enforce the limit; the run once it has ended, else None."""
        info = self._info(run.job)
        if info is None:
            return None
        if info["statename"] in RUNNING_STATES:
            now = time.time()
            started = run.started_at or now
            if run.id not in self.stops and now - started > limit_s:
                self._stop(run, "timed_out", f"over its time limit of {limit_s:.0f} s")
            stop = self.stops.get(run.id)
            if stop and now - stop[2] > self.grace_s and info["statename"] != "STOPPED":
                log.warning("%s run %d did not stop within %.0f s: SIGKILL", run.job, run.id,
                            self.grace_s)
                try:
                    self._rpc().signalProcess(f"{supervisor.GROUP}:{run.job}", "KILL")
                except (OSError, xmlrpc.client.Fault):
                    pass
            return None
        return self._finalize(run, info)

    def cancel(self, run: JobRun, reason: str) -> None:
        self._stop(run, "cancelled", reason)

    def _stop(self, run: JobRun, outcome: str, reason: str) -> None:
        log.warning("%s run %d: stopping (%s)", run.job, run.id, reason)
        self.stops[run.id] = (outcome, reason, time.time())
        try:
            supervisor.stop_process(supervisor.connect(self.cfg), f"{supervisor.GROUP}:{run.job}",
                                    wait=False)
        except (OSError, xmlrpc.client.Fault) as exc:
            log.warning("stopProcess %s: %s", run.job, exc)

    def _finalize(self, run: JobRun, info: dict[str, Any], note: str = "") -> JobRun | None:
        stats = self._slice()[1]
        oom = (stats.oom_kills or 0) - (run.oom_kills or 0)
        exit_status = info.get("exitstatus")
        stop = self.stops.pop(run.id, None)
        if oom > 0:
            outcome, reason = "oom_killed", (f"OOM-killed by the kernel at the batch slice's cap "
                                             f"({(stats.memory_max or 0) >> 20} MiB)")
        elif stop is not None:
            outcome, reason = stop[0], stop[1]
        elif info["statename"] == "FATAL":
            outcome, reason = "failed", f"could not start: {info.get('spawnerr') or 'FATAL'}"
        elif exit_status == 0:
            outcome, reason = "ok", None
        elif exit_status in EXIT_REASONS:
            outcome, reason = EXIT_REASONS[exit_status]
        else:
            outcome, reason = "failed", f"exit status {exit_status}; see var/log/{run.job}.log"
        ended = time.time()
        started = run.started_at or ended
        self.runs.update(run.id, state=outcome, ended_at=ended,
                         duration_s=round(ended - started, 3), exit_status=exit_status,
                         peak_bytes=stats.memory_peak, cap_bytes=stats.memory_max,
                         oom_kills=max(oom, 0),
                         report=self._report_since(started),
                         reason=(f"{reason}; {note}" if note and reason else reason or note
                                 or None))
        return self.runs.get(run.id)

    def _report_since(self, started: float) -> str | None:
        """The report a run wrote: the newest report folder made after it started."""
        folder = self.cfg.reports_dir
        if not folder.is_dir():
            return None
        made = [p for p in folder.iterdir() if p.is_dir() and p.stat().st_mtime >= started - 1]
        return str(max(made, key=lambda p: p.stat().st_mtime)) if made else None

    # --- restarts and programs started by hand ---------------------------------------------
    def still_running(self, run: JobRun) -> bool:
        info = self._info(run.job)
        return bool(info and info["statename"] in RUNNING_STATES and info["pid"] == run.pid)

    def close_after_restart(self, run: JobRun) -> None:
        info = self._info(run.job) or {"statename": "UNKNOWN", "exitstatus": None}
        note = "the scheduler restarted while it ran"
        if info.get("start", 0) + 1 < (run.started_at or 0):     # it has not run since
            info = {**info, "statename": "UNKNOWN", "exitstatus": None}
            note += "; its exit status is unknown"
        self._finalize(run, info, note)

    def started_by_hand(self, runs: JobRuns) -> JobRun | None:
        """A batch program running without a run record (``supervisorctl start``): record it."""
        for job in JOBS:
            info = self._info(job)
            if info and info["statename"] in ("STARTING", "RUNNING"):
                run = runs.add(job, f"by hand {info['start']}", "by_hand", "running")
                if run is None:
                    continue
                runs.update(run.id, started_at=float(info["start"]), pid=info["pid"],
                            oom_kills=self._slice()[1].oom_kills or 0)
                return runs.get(run.id)
        return None
