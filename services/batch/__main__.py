"""Batch programs (backtest, walkforward) run only while a job runs, then exit.

The engines are not built yet: rather than pretend to work, the program says so and exits
with status 3, which supervisord records as an unexpected exit.
"""

import sys

from shared.logs import setup_logging

if __name__ == "__main__":
    job = sys.argv[1] if len(sys.argv) > 1 else "?"
    log = setup_logging(job)
    if job not in ("backtest", "walkforward"):
        log.error("unknown batch job %r; expected backtest or walkforward", job)
        raise SystemExit(2)
    log.error("%s engine is not implemented yet; nothing was run", job)
    raise SystemExit(3)
