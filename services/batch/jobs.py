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
    if job == "walkforward":
        log.error("walkforward engine is not implemented yet; nothing was run")
        return 3
    limit = cfg.get("backtest.time_limit_s")
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    try:
        return _backtest(cfg, log)
    except TimeLimit:
        log.error("backtest stopped by its own watchdog after %d s (backtest.time_limit_s)",
                  limit)
        return 124
    finally:
        signal.alarm(0)


def _backtest(cfg: Config, log: logging.Logger) -> int:
    from shared.backtest.jobs import default_range, run_and_report
    from shared.backtest.memory import MemoryExhausted
    from shared.backtest.runner import BacktestSpec
    from shared.models.artifacts import ModelError

    symbol = cfg.get("market.symbols")[0]
    next_log = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() >= next_log[0]:            # plain log lines under supervisord
            next_log[0] = time.monotonic() + 10
            log.info("progress: %d of %d bars", done, total)

    try:
        start, end = default_range(cfg, symbol)
        doc, folder = run_and_report(cfg, BacktestSpec(symbol, start, end), progress=progress)
    except MemoryExhausted as exc:
        log.error("out of memory under the batch slice's cap: %s", exc)
        return 4
    except (ValueError, ModelError) as exc:
        log.error("backtest not run: %s", exc)
        return 1
    m = doc["metrics"]
    log.info("report %s: %d bars, return %+.4f, max drawdown %.4f, %d trades; %s", doc["id"],
             m["bars"], m["total_return"], m["max_drawdown"], m["trades"],
             folder / "report.html")
    return 0
