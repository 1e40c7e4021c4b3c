"""scheduler: the APScheduler clock for the batch jobs (scheduler/service.py)."""

from scheduler.service import SchedulerService
from shared.bus.service import run

if __name__ == "__main__":
    run(SchedulerService)
