"""The scheduler on a real stack (issue 14): jobs started through supervisord one at a time,
their outcomes — ok, failed, timed_out (the time limit), oom_killed (the batch slice's cap) —
recorded with peak memory and cap; a program started by hand is recorded; a scheduler killed
-9 mid-job leaves no run `running` once it is back; the bot keeps trading throughout."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from shared.bus.streams import Subscriber
from shared.resources.allocation import DEFAULT_PATH
from tests.cgroup_helpers import writable_backend
from tests.helpers import wait_until
from tests.stack import make_stack

OUTCOMES = ("ok", "failed", "timed_out", "oom_killed", "cancelled", "skipped")


def runs(stack) -> list[dict]:
    return stack.call("scheduler", "history", limit=50)


def ended(stack, n: int, timeout: float = 90) -> list[dict]:
    wait_until(lambda: sum(r["state"] in OUTCOMES for r in runs(stack)) >= n, timeout=timeout,
               interval=0.5, what=f"{n} job outcome(s)")
    return runs(stack)


@pytest.fixture(scope="module")
def stack():
    s = make_stack(20_000, BDT_BOT__WAIT_SUBSCRIBERS="2", BDT_MARKET__REPLAY_SPEED="600")
    try:
        s.start().wait_running(["cache", "history", "predictor", "bot", "scheduler"])
        yield s
    finally:
        s.remove()


def test_two_jobs_run_one_after_the_other_and_both_are_recorded(stack):
    assert stack.bdt("job", "run", "backtest").returncode == 0
    assert stack.bdt("job", "run", "walkforward").returncode == 0
    by_job = {r["job"]: r for r in ended(stack, 2)}
    bt, wf = by_job["backtest"], by_job["walkforward"]
    assert bt["state"] == "ok", bt
    assert bt["report"] and (stack.var / "reports").exists()
    assert bt["peak_bytes"] and bt["cap_bytes"] == 1536 << 20
    assert wf["state"] == "failed" and wf["exit_status"] == 1    # too little data for 12 weeks
    log = (stack.var / "log" / "walkforward.log").read_text()
    assert "walk-forward not run: fold 0: the stored bars start at" in log
    assert wf["started_at"] >= bt["ended_at"]                      # never overlapping
    listed = json.loads(stack.bdt("job", "list", "--json").stdout)
    assert {j["job"]: j["last"]["state"] for j in listed} == {"backtest": "ok",
                                                               "walkforward": "failed"}
    assert all(j["next_run"] for j in listed)


def test_a_program_started_by_hand_is_recorded(stack):
    before = len(runs(stack))
    stack.ctl("start", "bitdaytrader:backtest")
    latest = ended(stack, before + 1)[0]
    assert latest["trigger"] == "by_hand" and latest["state"] == "ok"


def test_a_damaged_job_store_is_rebuilt_and_a_damaged_history_refused(stack):
    """Issue 24 (b) under supervisord: random bytes over scheduler.db — moved aside, one log
    line, rebuilt, RUNNING (it was a crash loop); over jobs.db — refused, one line a try, FATAL
    after supervisord's retries, the file untouched; put back, the scheduler starts."""
    data, log = stack.var / "data", stack.var / "log" / "scheduler.log"
    program = "bitdaytrader:scheduler"
    stack.ctl("stop", program)
    garbage = os.urandom(16 << 10)
    (data / "scheduler.db").write_bytes(garbage)
    mark = log.stat().st_size
    stack.ctl("start", program)
    wait_until(lambda: "RUNNING" in stack.ctl("status", program), timeout=30,
               what="the scheduler running")
    time.sleep(3)                                       # past startsecs: it stays up
    assert "RUNNING" in stack.ctl("status", program)
    [aside] = data.glob("scheduler.db.corrupt-*")
    assert aside.read_bytes() == garbage
    new = log.read_bytes()[mark:].decode()
    [line] = [ln for ln in new.splitlines() if "moved aside" in ln]
    assert f"job store {data / 'scheduler.db'} is unreadable (file is not a database)" in line
    assert "Traceback" not in new
    listed = json.loads(stack.bdt("job", "list", "--json").stdout)
    assert all(j["next_run"] for j in listed)

    stack.ctl("stop", program)
    kept = stack.dir / "jobs.db.kept"
    (data / "jobs.db").rename(kept)
    for suffix in ("-wal", "-shm"):
        (data / f"jobs.db{suffix}").unlink(missing_ok=True)
    (data / "jobs.db").write_bytes(garbage)
    mark = log.stat().st_size
    stack.ctl("start", program)
    wait_until(lambda: "FATAL" in stack.ctl("status", program), timeout=60,
               what="supervisord giving up on the scheduler")
    new = log.read_bytes()[mark:].decode()
    refusals = [ln for ln in new.splitlines() if "refusing to start" in ln]
    assert refusals and all(f"job-run database {data / 'jobs.db'} is unusable" in ln
                            for ln in refusals)
    assert "Traceback" not in new
    assert (data / "jobs.db").read_bytes() == garbage
    (data / "jobs.db").unlink()
    kept.rename(data / "jobs.db")
    stack.ctl("start", program)
    wait_until(lambda: "RUNNING" in stack.ctl("status", program), timeout=30,
               what="the scheduler running again")
    assert runs(stack)                                  # the history is back

@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A stack whose batch slice has an 80 MiB cap."""
    table = tmp_path_factory.mktemp("alloc") / "allocation.toml"
    table.write_text(DEFAULT_PATH.read_text().replace('memory_max = "1.5G"',
                                                      'memory_max = "80M"'))
    s = make_stack(20_000, BDT_BOT__WAIT_SUBSCRIBERS="2", BDT_MARKET__REPLAY_SPEED="600",
                   BDT_CGROUPS__ALLOCATION=str(table))
    try:
        s.start().wait_running(["cache", "history", "predictor", "bot", "scheduler"])
        yield s
    finally:
        s.remove()


def test_a_job_over_its_cap_is_oom_killed_recorded_and_the_bot_trades_on(tight):
    backend, reason = writable_backend(tight.tree)
    if backend is None:
        pytest.skip(f"cgroups not writable here: {reason}")
    bars = tight.call("bot", "status")["bars_published"]
    events = Subscriber(["events"], tight.cfg)
    try:
        assert tight.bdt("job", "run", "backtest").returncode == 0
        [bt] = ended(tight, 1)
        assert bt["state"] == "oom_killed", bt
        assert bt["oom_kills"] >= 1 and bt["cap_bytes"] == 80 << 20
        assert bt["peak_bytes"] >= 0.9 * (80 << 20)
        assert "OOM-killed by the kernel at the batch slice's cap (80 MiB)" in bt["reason"]
        seen = []
        wait_until(lambda: (m := events.receive(timeout_ms=100)) is not None and
                   seen.append(m.fields) is None and any(
                       f.get("kind") == "alert" and f.get("alert") == "oom_kill" for f in seen),
                   timeout=10, what="the oom_kill alert on the bus")
    finally:
        events.close()
    wait_until(lambda: tight.call("bot", "status")["bars_published"] > bars + 20,
               what="the bot's bars going on during and after the job")
    assert backend.stats("batch").pids == []             # nothing left in the slice


@pytest.fixture(scope="module")
def hasty():
    """A stack whose backtest may run 2 s: not enough for it to finish."""
    s = make_stack(20_000, BDT_BOT__WAIT_SUBSCRIBERS="2", BDT_MARKET__REPLAY_SPEED="600",
                   BDT_SCHEDULER__BACKTEST_LIMIT_MIN="0.03", BDT_SCHEDULER__STOP_GRACE_S="3")
    try:
        s.start().wait_running(["cache", "history", "predictor", "bot", "scheduler"])
        yield s
    finally:
        s.remove()


def test_a_job_over_its_time_limit_is_stopped_and_recorded_timed_out(hasty):
    hasty.call("scheduler", "run", job="backtest")
    [run] = ended(hasty, 1)
    assert run["state"] == "timed_out" and run["reason"] == "over its time limit of 2 s"
    info = hasty.ctl("status", "bitdaytrader:backtest")
    assert "RUNNING" not in info and "STARTING" not in info
    backend, _ = writable_backend(hasty.tree)
    if backend is not None:
        assert backend.stats("batch").pids == []


def test_a_scheduler_killed_mid_job_reconciles_the_run(hasty):
    n = len(runs(hasty))
    hasty.call("scheduler", "run", job="backtest")
    wait_until(lambda: any(r["state"] == "running" for r in runs(hasty)), timeout=20,
               interval=0.1, what="the job running")
    os.kill(hasty.pids()["scheduler"], signal.SIGKILL)
    time.sleep(1)
    wait_until(lambda: "scheduler" in hasty.pids(), timeout=30, what="the scheduler back")
    latest = ended(hasty, n + 1)[0]
    assert latest["state"] == "timed_out", latest           # adopted, then stopped at its limit
    assert not any(r["state"] == "running" for r in runs(hasty))
