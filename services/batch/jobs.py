"""What each batch program does, with its watchdog and exit codes (see __main__.py).

``REGISTRY`` is the batch dispatch: one ``BatchJob`` (name, run, limit_key) per job of the
program table (shared/programs.py), registered with ``@batch_job(name)`` — arq's ``cron()`` in
spirit: a job is a value, and nothing here branches on a job's name.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.config import Config
from shared.programs import ProgramTableError, job

Run = Callable[[Config, logging.Logger], int]


@dataclass(frozen=True)
class BatchJob:
    """A batch job's code: what runs, and the config key of its one time limit (minutes)."""

    name: str
    run: Run
    limit_key: str

    def watchdog_s(self, cfg: Config) -> int:
        """When the job ends itself: its time limit, at which the scheduler stops it, plus the
        scheduler's stop grace — a backstop for a job whose scheduler is gone, never first."""
        return math.ceil(cfg.get(self.limit_key) * 60 + cfg.get("scheduler.stop_grace_s"))


REGISTRY: dict[str, BatchJob] = {}


def batch_job(name: str) -> Callable[[Run], Run]:
    """Register ``run`` as job ``name`` of the program table (an error naming the jobs if it is
    none of them)."""
    def register(run: Run) -> Run:
        REGISTRY[name] = BatchJob(name, run, job(name).limit_key)
        return run
    return register


def registered(name: str) -> BatchJob:
    """The registered job ``name``; ProgramTableError naming the jobs when it is none of the
    table's, or saying it has no function here."""
    job(name)
    if name not in REGISTRY:
        raise ProgramTableError(f"job {name!r} of the program table has no @batch_job "
                                "function in services/batch/jobs.py")
    return REGISTRY[name]


class TimeLimit(Exception):
    """The job ran past its watchdog (``BatchJob.watchdog_s``)."""


def _alarm(signum: int, frame: object) -> None:
    raise TimeLimit


def run_job(name: str, cfg: Config, log: logging.Logger) -> int:
    """Run job ``name`` to an exit code."""
    spec = registered(name)
    limit = spec.watchdog_s(cfg)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    from shared.backtest.memory import MemoryExhausted

    try:
        return spec.run(cfg, log)
    except MemoryExhausted as exc:
        log.error("out of memory under the batch slice's cap: %s", exc)
        return 4
    except TimeLimit:
        log.error("%s stopped by its own watchdog after %d s (%s + scheduler.stop_grace_s)",
                  name, limit, spec.limit_key)
        return 124
    finally:
        signal.alarm(0)


@batch_job("backtest")
def _backtest(cfg: Config, log: logging.Logger) -> int:
    from shared.backtest.jobs import default_range, run_and_report, trained_to_ts
    from shared.backtest.runner import BacktestSpec
    from shared.models.artifacts import ModelError

    symbol = cfg.get("market.symbols")[0]
    next_log = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() >= next_log[0]:            # plain log lines under supervisord
            next_log[0] = time.monotonic() + 10
            log.info("progress: %d of %d bars", done, total)

    try:
        start, end = default_range(cfg, symbol, trained_to_ts(cfg))
        doc, folder = run_and_report(cfg, BacktestSpec(symbol, start, end), progress=progress)
    except (ValueError, ModelError) as exc:
        log.error("backtest not run: %s", exc)
        return 1
    m = doc["metrics"]
    log.info("report %s: %d bars, return %+.4f, max drawdown %.4f, %d trades; %s", doc["id"],
             m["bars"], m["total_return"], m["max_drawdown"], m["trades"],
             folder / "report.html")
    return 0


@batch_job("walkforward")
def _walkforward(cfg: Config, log: logging.Logger) -> int:
    from shared.backtest.jobs import run_walkforward
    from shared.backtest.walkforward import WalkForwardError

    def progress(result) -> None:
        fold = result.fold
        if result.error:
            log.error("fold %d failed: %s", fold.index, result.error)
        else:
            log.info("fold %d: out of sample %+.4f over %d trades, in sample %+.4f (%s)",
                     fold.index, result.oos["total_return"], result.trades,
                     result.is_["total_return"], result.seconds)

    try:
        doc, folder = run_walkforward(cfg, cfg.get("market.symbols")[0], progress=progress)
    except (ValueError, WalkForwardError) as exc:
        log.error("walk-forward not run: %s", exc)
        return 1
    gate = doc["gate"]
    log.info("walk-forward %s: %d folds (%d failed), OOS %+.4f, WFE %s; gate: %s (%s); %s",
             doc["id"], doc["metrics"]["folds"], doc["metrics"]["failed"],
             doc["metrics"]["oos_total_return"], doc["metrics"]["walk_forward_efficiency"],
             "promoted" if gate.get("promoted") else "not promoted",
             "; ".join(gate.get("reasons", [gate.get("reason", "")])), folder / "report.html")
    return 0 if doc["metrics"]["failed"] < doc["metrics"]["folds"] else 1
