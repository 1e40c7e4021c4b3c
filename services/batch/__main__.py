"""The batch programs, run by supervisord only while a job runs (the scheduler starts them at
03:00 / Sunday 02:00; ``supervisorctl start bitdaytrader:backtest`` by hand):

- ``backtest``: the default spec (the last ``backtest.window_days`` full days, the configured
  strategy, the promoted model) through the trading engine; writes a report and exits 0.
- ``walkforward``: the configured walk-forward (the last ``walkforward.folds`` weeks), the
  promotion gate, a report; exits 0 unless every fold failed.

The jobs are the program table's (shared/programs.py), each run by the function registered for
it in jobs.py. Exit codes: 0 done, 1 failed (the log says why), 2 an unknown job or a bad
configuration, 4 out of memory under the cap (MemoryExhausted: what it tried is logged), 124
past its own watchdog (its one time limit, ``scheduler.<job>_limit_min``, plus
``scheduler.stop_grace_s``: it ends the job even if its scheduler is gone).
"""

from __future__ import annotations

import signal
import sys

from services.batch.jobs import registered, run_job
from shared.config import ConfigError, load_config
from shared.logs import setup_logging
from shared.programs import ProgramTableError

if __name__ == "__main__":
    job = sys.argv[1] if len(sys.argv) > 1 else "?"
    log = setup_logging(job)
    try:
        registered(job)
    except ProgramTableError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    try:
        cfg = load_config()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        raise SystemExit(2) from None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))    # cleanups run on the way out
    raise SystemExit(run_job(job, cfg, log))
