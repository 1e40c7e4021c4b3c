"""The backtest as a job: its default range, one run written as a report — what ``bdt backtest``
and the batch program ``backtest`` (the 03:00 job) both call."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.backtest.report import new_run_id, result_document, write_report
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
    """The walk-forward of the configured spec, the promotion gate, and its report; (the report
    document, its folder). The newest fold's model (the challenger) is registered with the gate's
    decision in its metadata and the registry's gate log; promoted when the gate says so and
    ``walkforward.auto_promote`` is on."""
    from shared.backtest.runner import BacktestSpec, run_backtest
    from shared.backtest.walkforward import (
        fold_rows,
        run_folds,
        stitch,
        summary,
    )
    from shared.models.promotion import decide, deflated_sharpe, per_period_sharpe
    from shared.models.registry import GATE_FILE, ModelRegistry

    started = time.perf_counter()
    overrides = overrides or {}
    folds = walkforward_folds(cfg, symbol)
    results = run_folds(cfg, symbol, folds, overrides, progress)
    cash = cfg.get("paper.starting_cash")
    summ = summary(results, cash)
    registry = ModelRegistry(cfg.model_dir)
    newest = results[-1]
    gate: dict[str, Any] = {"decision": None, "reason": "the newest fold failed: no challenger"}
    if newest.error is None:
        fold = newest.fold
        champion_version = registry.current()
        champion = None
        if champion_version is not None:
            champ = run_backtest(cfg, BacktestSpec(symbol, fold.test_start, fold.test_end,
                                                   dict(overrides)))
            champion = {"version": champion_version, **{k: champ.metrics[k] for k in
                                                        ("total_return", "trades")}}
        sharpes = [per_period_sharpe(r.returns) for r in results if r.error is None]
        dsr = deflated_sharpe(newest.returns, trials=len(results) + trial_count(cfg),
                              trial_sharpes=sharpes)
        w = cfg.section("walkforward")
        decision = decide({"total_return": newest.oos["total_return"],
                           "trades": newest.trades}, champion, dsr,
                          min_margin=w["min_return_margin"], min_trades=w["min_trades"],
                          min_dsr=w["min_dsr"])
        window = {"from_ts": fold.train_start, "to_ts": fold.train_end,
                  "oos_from_ts": fold.test_start, "oos_to_ts": fold.test_end}
        version = registry.register(newest.model, {
            "horizon": cfg.get("model.horizon_bars"), "window": window,
            "source": f"walk-forward fold {fold.index} of {len(results)}",
            "metrics": newest.seconds.get("training_report"),    # GARCH fallback included
            "gate": decision.to_dict(), "walkforward": summ})
        promoted = decision.promote and w["auto_promote"]
        if promoted:
            registry.promote(version, reason="walk-forward promotion gate")
        gate = {**decision.to_dict(), "challenger_version": version,
                "champion_version": champion_version, "promoted": promoted}
        registry.log_event(GATE_FILE, gate)
    ok = [r for r in results if r.error is None]
    curve = stitch(ok, cash)
    peak, chart = 0.0, []
    for ts, equity in curve:
        peak = max(peak, equity)
        chart.append({"ts": ts, "equity": equity, "drawdown": 1 - equity / peak if peak else 0})
    doc = {"id": new_run_id("walkforward", cfg.get("strategy.name")), "kind": "walkforward",
           "created_at": dt.datetime.now(dt.UTC).isoformat(), "symbol": symbol,
           "start_ts": folds[0].train_start, "end_ts": folds[-1].test_end,
           "strategy": cfg.get("strategy.name"), "model_version": gate.get("challenger_version"),
           "overrides": overrides, "label": "", "settings": cfg.section("walkforward"),
           "metrics": {**summ, "promoted": gate.get("promoted", False)},
           "gate": gate, "folds": fold_rows(results),
           "monthly_returns": stitched_months(curve, cash),
           "run": {"wall_s": round(time.perf_counter() - started, 3)},
           "trades": [t for r in ok for t in r.trade_rows], "equity_chart": chart}
    doc["html_extra"] = fold_html(doc)
    return doc, write_report(doc, cfg.reports_dir)


def stitched_months(curve: list[tuple[int, float]], starting_cash: float
                    ) -> list[dict[str, Any]]:
    """Each calendar month's return on the stitched out-of-sample curve (what the report's
    ``oos_total_return`` compounds): ``metrics.monthly_returns`` on it as daily closes."""
    from shared.backtest.metrics import monthly_returns
    from shared.backtest.state import EquityTracker

    tracker = EquityTracker(1)
    tracker.daily = list(curve)
    return monthly_returns(tracker, starting_cash)


def fold_html(doc: dict[str, Any]) -> str:
    """The fold chart (out-of-sample return per fold, as SVG bars) and the gate's decision."""
    import html

    from shared.formatting import count, number, percent

    folds = doc["folds"]
    values = [(f["oos"] or {}).get("total_return") or 0.0 for f in folds]
    top = max([abs(v) for v in values] + [1e-9])
    width, height, bar = 900, 160, max(4, 860 // max(1, len(values)))
    bars = "".join(
        f'<rect x="{20 + i * bar}" y="{80 - max(v, 0) / top * 70:.1f}" width="{bar - 2}" '
        f'height="{abs(v) / top * 70:.1f}" fill="{"#1a7f37" if v >= 0 else "#cf222e"}">'
        f"<title>fold {i}: {percent(v, 3, signed=True)}</title></rect>"
        for i, v in enumerate(values))
    rows = "".join(
        f"<tr><td>{f['index']}</td>"
        f"<td>{percent((f['oos'] or {}).get('total_return'), 3, signed=True)}</td>"
        f"<td>{percent((f['is'] or {}).get('total_return'), 3, signed=True)}</td>"
        f"<td>{number(f['wfe'])}</td><td>{count(f['trades'])}</td>"
        f"<td>{html.escape(f['error'] or '')}</td></tr>" for f in folds)
    gate = doc.get("gate", {})
    return (f'<h2>Folds: out-of-sample return</h2><svg width="{width}" height="{height}">'
            f'<line x1="20" y1="80" x2="{width - 20}" y2="80" stroke="#888"/>{bars}</svg>'
            "<table><tr><th>fold</th><th>OOS return</th><th>IS return</th><th>WFE</th>"
            f"<th>trades</th><th>error</th></tr>{rows}</table>"
            f"<h2>Promotion gate</h2><p>{'promoted' if gate.get('promoted') else 'not promoted'}"
            f": {html.escape('; '.join(gate.get('reasons', [gate.get('reason', '')])))}</p>")


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
