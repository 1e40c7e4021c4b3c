"""The scheduler's ops: the jobs, their runs, and running or cancelling one now."""

from __future__ import annotations

from shared.protocol.common import table
from shared.protocol.ops import Arg, Op

RUN = ("{id, job, slot, trigger, state, queued_at, started_at, ended_at, duration_s, "
       "exit_status, pid, peak_bytes, cap_bytes, oom_kills, report, reason}")

OPS = table(
    "scheduler",
    Op("jobs", "every job: schedule, timezone, time limit, next run, last outcome", (),
       "[{job, schedule, timezone, limit_s, next_run, last}]", verb="job list"),
    Op("run", "queue a run of a job now (it starts when no other job runs)",
       (Arg("job", str, "backtest or walkforward", cli="positional"),),
       RUN, verb="job run", idempotent=False),
    Op("history", "the newest job runs, newest first",
       (Arg("limit", int, "at most this many", 50, minimum=1),
        Arg("job", (str, type(None)), "only this job", None)), f"[{RUN}]", verb="job history"),
    Op("cancel", "stop the running job (or drop a queued run) and record it cancelled",
       (Arg("run_id", (int, type(None)), "the run; default: the running one", None),
        Arg("reason", str, "recorded with the run", "cancelled by the operator")),
       RUN, verb="job cancel", idempotent=False),
)
