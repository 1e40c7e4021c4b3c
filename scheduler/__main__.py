"""scheduler: the APScheduler clock for the batch jobs (scheduler/service.py)."""

import logging

from scheduler.service import SchedulerService
from shared.bus.service import run
from shared.jobs.runs import JobRunError


def main() -> None:
    """Run the scheduler. Its job-run history (jobs.db) unreadable: refuse to start — one log
    line naming the file and the way out, exit status 2, the file untouched — rather than a
    traceback (the job store, derived data, is rebuilt instead: scheduler/clock.py)."""
    try:
        run(SchedulerService)
    except JobRunError as exc:
        logging.getLogger("bdt.scheduler").error("refusing to start: %s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
