"""The backtest as a job: its default range, one run written as a report — what ``bdt backtest``
and the batch program ``backtest`` (the 03:00 job) both call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.backtest.report import new_run_id, result_document, write_report
from shared.backtest.runner import BacktestSpec, run_backtest
from shared.backtest.state import DAY_MS
from shared.config import Config
from shared.market.importing import open_store


def default_range(cfg: Config, symbol: str) -> tuple[int, int]:
    """The last ``backtest.window_days`` full UTC days before the day of the newest stored bar
    (live, that is "yesterday"); the whole store when it holds less than one full day.
    ValueError when nothing of ``symbol`` is stored."""
    store = open_store(cfg)
    try:
        span = store.collect(symbol, then=lambda lazy: lazy.select("ts").head(1)).vstack(
            store.collect(symbol, then=lambda lazy: lazy.select("ts").tail(1)))
    finally:
        store.close()
    if span.is_empty():
        raise ValueError(f"no {symbol} bars stored: import or download some first "
                         "(bdt data import|download)")
    first, last = int(span["ts"][0]), int(span["ts"][-1])
    end = last - last % DAY_MS
    start = max(first, end - cfg.get("backtest.window_days") * DAY_MS)
    if end <= first:
        return first, last + 1
    return start, end


def run_and_report(cfg: Config, spec: BacktestSpec, *, kind: str = "backtest",
                   progress: Callable[[int, int], None] | None = None
                   ) -> tuple[dict[str, Any], Path]:
    """Run ``spec`` and write its report; (the report document, its folder)."""
    result = run_backtest(cfg, spec, progress=progress)
    doc = result_document(result, new_run_id(kind, result.strategy), kind)
    return doc, write_report(doc, cfg.reports_dir)
