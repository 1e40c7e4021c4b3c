"""The scheduler process and its two stores when one is damaged (issue 24 (b)): 16 KiB of random
bytes over the job store (scheduler.db, derived from config) — moved aside, named in one log
line, rebuilt, and the scheduler runs on; over the job-run history (jobs.db) — the scheduler
refuses to start, one line naming the file and the way out, the file untouched."""

from __future__ import annotations

import os
import subprocess
import sys

from shared.bus.client import BusClient
from shared.config import load_config
from tests.helpers import REPO, child_env, start_module, stop_process, wait_until


def damage(path, size: int = 16 << 10) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    garbage = os.urandom(size)
    path.write_bytes(garbage)
    return garbage


def test_a_corrupt_job_store_is_moved_aside_and_the_scheduler_runs_on(tmp_path):
    var = tmp_path / "var"
    data = var / "data"
    garbage = damage(data / "scheduler.db")
    proc = start_module("scheduler", var)
    log = var / "scheduler.log"
    try:
        wait_until(lambda: "started pid=" in log.read_text() or proc.poll() is not None,
                   timeout=30, what="the scheduler started")
        assert proc.poll() is None, log.read_text()
        [aside] = data.glob("scheduler.db.corrupt-*")
        assert aside.read_bytes() == garbage
        lines = [ln for ln in log.read_text().splitlines() if "moved aside" in ln]
        assert len(lines) == 1 and f"job store {data / 'scheduler.db'} is unreadable (file is " \
            f"not a database): moved aside to {aside}" in lines[0]
        assert "Traceback" not in log.read_text()
        with BusClient("scheduler", load_config({"BDT_VAR": str(var)}), timeout_ms=3000) as c:
            jobs = {j["job"]: j for j in c.call("jobs")}
        assert jobs["backtest"]["next_run"].endswith("03:00:00+09:00")
        assert jobs["walkforward"]["next_run"].endswith("02:00:00+09:00")
    finally:
        assert stop_process(proc) == 0


def test_a_corrupt_job_history_is_refused_with_its_path_and_the_way_out(tmp_path):
    var = tmp_path / "var"
    history = var / "data" / "jobs.db"
    garbage = damage(history)
    out = subprocess.run([sys.executable, "-m", "scheduler"], cwd=REPO, env=child_env(var),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.splitlines()
    assert f"refusing to start: job-run database {history} is unusable (file is not a " \
           "database)" in line
    assert f"move it aside (mv {history} {history}.corrupt) to start an empty one" in line
    assert history.read_bytes() == garbage and list(history.parent.iterdir()) == [history]
