"""The backtest and the walk-forward as jobs — what ``bdt backtest``/``bdt walkforward`` and the
batch programs (the 03:00 and Sunday jobs) call. Orchestration only: the default range and
folds, the run, the promotion flow (``shared.models.promotion.challenge``), the report
(``shared.backtest.report``), and the sweeps' trial count."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.backtest.report import (
    new_run_id,
    result_document,
    walkforward_document,
    write_report,
)
from shared.backtest.runner import BacktestSpec, run_backtest
from shared.backtest.state import DAY_MS
from shared.config import Config
from shared.market.bars import timeframe_ms
from shared.storage.bar_store import open_store


def default_range(cfg: Config, symbol: str, trained_to: int | None = None) -> tuple[int, int]:
    """The last ``backtest.window_days`` full UTC days before the day of the newest stored bar
    (live, that is "yesterday"); the whole store when it holds less than one full day.
    ``trained_to``: the newest bar the model's training saw (``trained_to_ts``): the range
    then starts after it, so the model is tested out of sample, unless nothing would be left
    (the report then marks the share in sample). ValueError when nothing of ``symbol`` is
    stored."""
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
        start, end = first, last + 1
    after = None if trained_to is None \
        else trained_to + timeframe_ms(cfg.get("market.timeframe"))   # the bar after it
    if after is not None and start < after < end:
        start = after
    return start, end


def trained_to_ts(cfg: Config, strategy: str | None = None) -> int | None:
    """The newest bar the promoted model was trained on (its ``metadata.window.to_ts``), when
    ``strategy`` (default ``strategy.name``) uses a model and one is promoted; else None."""
    from shared.models.artifacts import ModelError
    from shared.models.registry import ModelRegistry
    from shared.trading.strategies import MlStrategy

    if (strategy or cfg.get("strategy.name")) != MlStrategy.name:
        return None
    registry = ModelRegistry(cfg.model_dir)
    version = registry.current()
    if version is None:
        return None
    try:
        window = registry.metadata(version).get("window") or {}
    except ModelError:
        return None
    to_ts = window.get("to_ts")
    return int(to_ts) if isinstance(to_ts, int) else None


def run_and_report(cfg: Config, spec: BacktestSpec, *, kind: str = "backtest",
                   progress: Callable[[int, int], None] | None = None
                   ) -> tuple[dict[str, Any], Path]:
    """Run ``spec`` and write its report; (the report document, its folder)."""
    result = run_backtest(cfg, spec, progress=progress)
    doc = result_document(result, new_run_id(kind, result.strategy), kind)
    return doc, write_report(doc, cfg.reports_dir)


def walkforward_folds(cfg: Config, symbol: str):
    """The configured folds, ending at the start of the day of the newest stored bar."""
    from shared.backtest.walkforward import make_folds

    first, end = default_range(cfg, symbol)
    store = open_store(cfg)
    try:
        head = store.collect(symbol, then=lambda lazy: lazy.select("ts").head(1))
    finally:
        store.close()
    w = cfg.section("walkforward")
    return make_folds(int(head["ts"][0]), end, train_days=w["train_days"],
                      test_days=w["test_days"], folds=w["folds"], anchored=w["anchored"],
                      purge_bars=w["purge_bars"], embargo_bars=w["embargo_bars"],
                      horizon_bars=cfg.get("model.horizon_bars"),
                      timeframe=timeframe_ms(cfg.get("market.timeframe")))


def run_walkforward(cfg: Config, symbol: str, *, overrides: dict[str, str] | None = None,
                    progress: Callable[[Any], None] | None = None
                    ) -> tuple[dict[str, Any], Path]:
    """The walk-forward of the configured spec, the promotion flow and its report; (the report
    document, its folder). The newest fold's model (the challenger) is registered with the
    gate's decision in its metadata and the registry's gate log; promoted when the gate says so
    and ``walkforward.auto_promote`` is on (``shared.models.promotion.challenge``)."""
    from shared.backtest.walkforward import run_folds, summary
    from shared.models.promotion import challenge

    started = time.perf_counter()
    overrides = overrides or {}
    results = run_folds(cfg, symbol, walkforward_folds(cfg, symbol), overrides, progress)
    cash = cfg.get("paper.starting_cash")
    summ = summary(results, cash)
    def champion_figures(fold: Any) -> dict[str, Any]:
        """The promoted model's return and trades over ``fold``'s test window."""
        champ = run_backtest(cfg, BacktestSpec(symbol, fold.test_start, fold.test_end,
                                               dict(overrides)))
        return {k: champ.metrics[k] for k in ("total_return", "trades")}

    gate = challenge(cfg, results, champion_figures, summ, trial_count(cfg))
    strategy = cfg.get("strategy.name")
    doc = walkforward_document(
        new_run_id("walkforward", strategy), results, symbol=symbol, strategy=strategy,
        summary=summ, gate=gate, overrides=overrides, settings=cfg.section("walkforward"),
        starting_cash=cash, wall_s=round(time.perf_counter() - started, 3))
    return doc, write_report(doc, cfg.reports_dir)


TRIALS_FILE = "trials.jsonl"


def trial_count(cfg: Config) -> int:
    """Configurations tried in parameter sweeps (``bdt backtest --grid``), for the DSR."""
    path = cfg.reports_dir / TRIALS_FILE
    return sum(1 for _ in path.open()) if path.exists() else 0


def record_trials(cfg: Config, combos: list[dict[str, str]]) -> None:
    import json

    cfg.reports_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.reports_dir / TRIALS_FILE).open("a") as f:
        for combo in combos:
            f.write(json.dumps(combo) + "\n")
