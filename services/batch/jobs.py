"""What each batch program does, with its watchdog and exit codes (see __main__.py)."""

from __future__ import annotations

import logging
import signal
import time

from shared.config import Config


class TimeLimit(Exception):
    """The job ran past backtest.time_limit_s."""


def _alarm(signum: int, frame: object) -> None:
    raise TimeLimit


def run_job(job: str, cfg: Config, log: logging.Logger) -> int:
    """Run ``job`` to an exit code."""
    limit = cfg.get("backtest.time_limit_s") if job == "backtest" else \
        cfg.get("scheduler.walkforward_limit_min") * 60
    run = _backtest if job == "backtest" else _walkforward
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(limit))
    from shared.backtest.memory import MemoryExhausted

    try:
        return run(cfg, log)
    except MemoryExhausted as exc:
        log.error("out of memory under the batch slice's cap: %s", exc)
        return 4
    except TimeLimit:
        log.error("%s stopped by its own watchdog after %d s", job, limit)
        return 124
    finally:
        signal.alarm(0)


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
