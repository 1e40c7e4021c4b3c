"""Walk-forward: train on a window, backtest the window after it, move on (rolling or anchored
training windows), each fold with the same training code as ``bdt train`` and the same backtest
engine as ``bdt backtest``.

**Purge and embargo.** The models forecast ``model.horizon_bars`` ahead, so the last training
rows' targets look that far into the future: without a gap the folds leak. A fold's training
window ends ``purge_bars + embargo_bars`` bars before its test window starts (López de Prado,
*Advances in Financial Machine Learning*, ch. 7): the purge removes the rows whose targets
overlap the test window (≥ the horizon), the embargo adds a margin for serial correlation.
Both are checked to be ≥ the horizon.

**Figures.** Per fold: the test window's metrics (out of sample), the same backtest over the
training window's last ``test_days`` (in sample, for the walk-forward efficiency = OOS return
÷ IS return, per fold and over all), and the stitched out-of-sample equity curve (each fold's
daily returns chained).

**Scale-out.** Folds run in this process by default; with ``batch.dask_scheduler`` set they run
as tasks on that Dask distributed cluster (each task reads the bars itself from the store by
path: no data is shipped per task). The in-process path never imports dask. Results are the
same either way: same seeds, same fold boundaries.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.backtest.state import DAY_MS
from shared.config import Config
from shared.market.bars import ts_text

log = logging.getLogger("bdt.walkforward")


@dataclass(frozen=True)
class Fold:
    """One fold; times are epoch ms, ends exclusive."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int


class WalkForwardError(ValueError):
    """Settings or data that cannot make a walk-forward (too little data, gap < horizon)."""


def make_folds(first_ts: int, end_ts: int, *, train_days: float, test_days: float,
               folds: int, anchored: bool, purge_bars: int, embargo_bars: int,
               horizon_bars: int, timeframe: int) -> list[Fold]:
    """The last ``folds`` test windows of ``test_days`` ending at ``end_ts``, oldest first, each
    with its training window (rolling: ``train_days`` long; anchored: from ``first_ts``) ending
    ``purge_bars + embargo_bars`` bars before the test window. WalkForwardError when the gap is
    below the horizon or the data does not reach back far enough."""
    if purge_bars < horizon_bars or embargo_bars < horizon_bars:
        raise WalkForwardError(f"purge ({purge_bars}) and embargo ({embargo_bars}) must each be "
                               f"at least the label horizon ({horizon_bars} bars): the folds "
                               "would leak")
    test_ms, gap_ms = int(test_days * DAY_MS), (purge_bars + embargo_bars) * timeframe
    out = []
    for k in range(folds):
        test_end = end_ts - (folds - 1 - k) * test_ms
        test_start = test_end - test_ms
        train_end = test_start - gap_ms
        train_start = first_ts if anchored else train_end - int(train_days * DAY_MS)
        if train_start < first_ts or train_end <= train_start:
            raise WalkForwardError(f"fold {k}: the stored bars start at {ts_text(first_ts)} UTC, "
                                   f"too late for a {train_days:g}-day training window before "
                                   f"{ts_text(train_end)} UTC (its test window starts "
                                   f"{ts_text(test_start)} UTC); fewer folds or a shorter "
                                   "window")
        out.append(Fold(k, train_start, train_end, test_start, test_end))
    return out


# --- one fold (a task: it runs here or on a Dask worker) ------------------------------------
@dataclass
class FoldResult:
    fold: Fold
    model: Any = None                        # the fold's ModelSet (the newest is the challenger)
    oos: dict[str, Any] = field(default_factory=dict)
    is_: dict[str, Any] = field(default_factory=dict)
    daily: list[tuple[int, float]] = field(default_factory=list)   # OOS daily closing equity
    returns: list[float] = field(default_factory=list)   # OOS log returns at the chart's step
    trades: int = 0
    trade_rows: list[dict[str, Any]] = field(default_factory=list)   # the OOS round trips
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def wfe(self) -> float | None:
        oos, ins = self.oos.get("total_return"), self.is_.get("total_return")
        return None if oos is None or not ins else oos / ins


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("total_return", "max_drawdown", "trades", "win_rate", "exposure", "fees_paid",
            "final_equity", "bars")
    return {k: metrics.get(k) for k in keep}


def run_fold(env: dict[str, str], symbol: str, fold: Fold, overrides: dict[str, str]
             ) -> FoldResult:
    """Train on the fold's training window, backtest its test window (and the in-sample
    window). ``env`` is the configuration as BDT_* variables: a Dask worker rebuilds it.
    Never raises: an error is recorded in the result."""
    from shared.backtest.runner import BacktestSpec, run_backtest, with_overrides
    from shared.config import load_config
    from shared.market.bars import timeframe_ms
    from shared.models.fitting import train_model_set
    from shared.storage.bar_store import open_store

    result = FoldResult(fold)
    try:
        cfg = with_overrides(load_config(env), overrides)
        t0 = time.perf_counter()
        store = open_store(cfg)
        try:
            bars = store.collect(symbol, fold.train_start, fold.train_end)
        finally:
            store.close()
        model, report = train_model_set(
            bars, horizon=cfg.get("model.horizon_bars"),
            timeframe_ms=timeframe_ms(cfg.get("market.timeframe")),
            max_gap_bars=cfg.get("model.max_gap_bars"))
        del bars
        t1 = time.perf_counter()
        label = f"fold-{fold.index}"
        oos = run_backtest(cfg, BacktestSpec(symbol, fold.test_start, fold.test_end),
                           model=(model, label))
        is_window = max(fold.train_start, fold.train_end - (fold.test_end - fold.test_start))
        ins = run_backtest(cfg, BacktestSpec(symbol, is_window, fold.train_end),
                           model=(model, label))
        t2 = time.perf_counter()
        result.model = model
        result.oos, result.is_ = _summary(oos.metrics), _summary(ins.metrics)
        result.trades = oos.metrics["trades"]
        result.trade_rows = [t.to_dict() for t in oos.trades]
        result.daily = oos.daily
        equity = [p["equity"] for p in oos.chart]
        result.returns = [math.log(b / a) for a, b in zip(equity, equity[1:], strict=False)
                          if a > 0 and b > 0]
        result.seconds = {"train": round(t1 - t0, 2), "backtest": round(t2 - t1, 2),
                          "training_report": report["metrics"]}
    except Exception as exc:                   # a failing fold is recorded; the others go on
        log.exception("fold %d failed", fold.index)
        result.error = f"{type(exc).__name__}: {exc}"
    return result


# --- the run --------------------------------------------------------------------------------
def config_env(cfg: Config) -> dict[str, str]:
    """``cfg`` as BDT_* variables (how a task carries the configuration to a worker)."""
    from shared.backtest.runner import _as_env

    return {f"BDT_{s.upper()}__{k.upper()}": _as_env(v)
            for s, values in cfg.as_dict().items() for k, v in values.items()}


def run_folds(cfg: Config, symbol: str, folds: list[Fold], overrides: dict[str, str],
              progress: Callable[[FoldResult], None] | None = None) -> list[FoldResult]:
    """Every fold, in this process or on the Dask cluster of ``batch.dask_scheduler``."""
    env = config_env(cfg)
    address = cfg.get("batch.dask_scheduler")
    if not address:
        results = []
        for fold in folds:
            results.append(run_fold(env, symbol, fold, overrides))
            if progress:
                progress(results[-1])
        return results
    from distributed import Client  # only here: the in-process path never imports dask

    with Client(address, timeout=30) as client:
        futures = client.map(run_fold, [env] * len(folds), [symbol] * len(folds), folds,
                             [overrides] * len(folds), pure=False)
        results = client.gather(futures)
    for r in results:
        if progress:
            progress(r)
    return sorted(results, key=lambda r: r.fold.index)


def stitch(results: list[FoldResult], starting_cash: float) -> list[tuple[int, float]]:
    """The out-of-sample equity curve: each fold's daily returns chained (failed folds flat)."""
    curve, equity = [], starting_cash
    for r in results:
        prev = starting_cash
        for day, value in r.daily:
            equity *= value / prev if prev else 1.0
            prev = value
            curve.append((day, equity))
    return curve


def summary(results: list[FoldResult], starting_cash: float) -> dict[str, Any]:
    ok = [r for r in results if r.error is None]
    curve = stitch(ok, starting_cash)
    oos = [r.oos["total_return"] for r in ok]
    ins = [r.is_["total_return"] for r in ok]
    total_oos = curve[-1][1] / starting_cash - 1.0 if curve else 0.0
    mean_is = sum(ins) / len(ins) if ins else 0.0
    return {"folds": len(results), "failed": len(results) - len(ok),
            "oos_total_return": total_oos,
            "oos_mean_fold_return": sum(oos) / len(oos) if oos else None,
            "is_mean_fold_return": mean_is if ins else None,
            "walk_forward_efficiency": (sum(oos) / len(oos)) / mean_is
            if oos and mean_is else None,
            "trades": sum(r.trades for r in ok)}


def fold_rows(results: list[FoldResult]) -> list[dict[str, Any]]:
    return [{**asdict(r.fold), "oos": r.oos, "is": r.is_, "wfe": r.wfe, "trades": r.trades,
             "error": r.error, "seconds": {k: v for k, v in r.seconds.items()
                                           if k != "training_report"}}
            for r in results]
