"""Issue 24 case 1: on `make run`'s embedded default every scheduled job succeeds. The Sunday
walk-forward failed every week ("the stored bars start too late for a 28-day training
window"): the sample held ~14 days and the default job needs 28 + 12 × 7. Here a fresh stack
with the default settings, started as `make run` starts it (the first training in the batch
slice, then supervisord), runs both jobs by hand to `ok`, and the gate's decision is
recorded."""

from __future__ import annotations

import json
import subprocess

from shared.jobs.runs import OUTCOMES
from shared.models.registry import GATE_FILE, ModelRegistry
from tests.helpers import wait_until
from tests.stack import AUTOSTART, Stack


def test_both_scheduled_jobs_run_to_ok_on_the_embedded_default():
    s = Stack(BDT_MARKET__SAMPLE_PAST_DAYS="114")          # the default, said out loud
    try:
        first = subprocess.run(["bdt", "cgexec", "batch", "--", "bdt", "train", "--if-missing"],
                               env=s.env, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr
        assert "SYNTHETIC data" in first.stdout
        s.start().wait_running(AUTOSTART, timeout=90)
        for job, limit_s in (("backtest", 300), ("walkforward", 900)):
            started = s.bdt("job", "run", job)
            assert started.returncode == 0, started.stderr

            def ended(job: str = job) -> dict | None:
                runs = json.loads(s.bdt("job", "history", "--json").stdout)
                done = [r for r in runs if r["job"] == job and r["state"] in OUTCOMES]
                return done[0] if done else None

            wait_until(lambda: ended() is not None, timeout=limit_s, interval=2,
                       what=f"{job} to end")
            run = ended()
            assert run is not None and run["state"] == "ok", (run, _log(s, job))
        gate = ModelRegistry(s.cfg.model_dir).read_log(GATE_FILE)
        assert gate and "promote" in gate[-1] and gate[-1]["challenger_version"]
    finally:
        s.remove()


def _log(s: Stack, job: str) -> str:
    path = s.var / "log" / f"{job}.log"
    return path.read_text()[-3000:] if path.exists() else "(no log)"
