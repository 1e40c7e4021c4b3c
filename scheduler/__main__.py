"""scheduler: the APScheduler clock for the nightly jobs. Skeleton until the scheduling issue."""

from shared.bus.skeleton import run_skeleton

if __name__ == "__main__":
    run_skeleton("scheduler", "APScheduler clock: 03:00 backtest, Sunday walk-forward",
                 "schedules no jobs yet: only ping and status")
