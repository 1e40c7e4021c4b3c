"""The backtest: the live trading engine fed from the market store (NautilusTrader's idea).

The same strategy, risk manager, fill model and trading engine the bot drives, with a
``BacktestState`` instead of the durable one and the paper broker. The range streams from the
store in chunks whose size follows the memory left under the slice's cap; each chunk carries
the bars before it that its features need. A decision on bar t sees only bars ≤ t: the
features and the GARCH state of bar t are computed from bars up to t, and a market order fills
at t's close (with the spread, slippage and fee of the fill model) — the price the live bot
could have had right after the bar closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from shared.backtest.memory import ChunkSizer, ManagedJob, SliceMemory
from shared.backtest.metrics import Trade, compute, monthly_returns, round_trips
from shared.backtest.state import BacktestState
from shared.config import Config, ConfigError, load_config
from shared.market.bars import Bar, timeframe_ms, utc
from shared.models.features import WARMUP_BARS
from shared.storage.bar_store import open_store
from shared.trading.broker_paper import PaperBroker
from shared.trading.engine import TradingEngine
from shared.trading.fills import FillModel
from shared.trading.strategies import strategy_from_config
from shared.trading.types import Prediction

log = logging.getLogger("bdt.backtest")


@dataclass
class BacktestSpec:
    """What to run: ``symbol`` over [start_ts, end_ts) (epoch ms), the settings to change
    (``overrides``: "section.key" → value as text, validated like BDT_* variables), and the
    model version (default: the promoted one). ``keep_decisions``: keep every decision in this
    window (parity)."""

    symbol: str
    start_ts: int
    end_ts: int
    overrides: dict[str, str] = field(default_factory=dict)
    model_version: str | None = None
    keep_decisions: tuple[int, int] | None = None
    label: str = ""


@dataclass
class BacktestResult:
    spec: BacktestSpec
    strategy: str
    model_version: str | None
    metrics: dict[str, Any]
    trades: list[Trade]                 # closed round trips only
    open_positions: list[dict[str, Any]]  # what is still held at the end (open_at_end)
    headline: list[str]                 # what a reader must know before the figures
    monthly: list[dict[str, Any]]
    chart: list[dict[str, Any]]         # thinned to the state's chart size
    daily: list[tuple[int, float]]      # (day start ts ms, equity at the day's last bar), every day
    decisions: list[dict[str, Any]]
    settings: dict[str, Any]
    run: dict[str, Any]                 # wall time, bars/s, chunks, peak memory, cap


def with_overrides(cfg: Config, overrides: dict[str, str]) -> Config:
    """``cfg`` with "section.key=value" overrides, validated as environment overrides are."""
    env = {f"BDT_{k.split('.', 1)[0].upper()}__{k.split('.', 1)[1].upper()}": v
           for k, v in overrides.items() if "." in k}
    bad = [k for k in overrides if "." not in k]
    if bad:
        raise ConfigError(f"--set {bad[0]!r}: expected section.key=value")
    base = {f"BDT_{s.upper()}__{k.upper()}": _as_env(v)
            for s, values in cfg.as_dict().items() for k, v in values.items()}
    return load_config({**base, **env})


def _as_env(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def run_backtest(cfg: Config, spec: BacktestSpec,
                 progress: Callable[[int, int], None] | None = None,
                 model: tuple[Any, str] | None = None) -> BacktestResult:
    """Run ``spec``; ``progress(bars_done, bars_total)`` after each chunk. ``model``: a model
    set and its label to use instead of the registry's (a walk-forward fold's). Raises
    ConfigError (bad settings), ModelError (no usable model for ``ml``), MemoryExhausted,
    ValueError (an empty range)."""
    cfg = with_overrides(cfg, spec.overrides)
    timeframe = timeframe_ms(cfg.get("market.timeframe"))
    strategy = strategy_from_config(cfg)
    model_set = version = None
    trained: dict[str, Any] | None = None      # the model's training window, when known
    if strategy.needs_prediction and model is not None:
        model_set, version = model
    elif strategy.needs_prediction:
        from shared.models.registry import ModelRegistry

        loaded = ModelRegistry(cfg.model_dir).load(spec.model_version)
        model_set, version = loaded.model_set, loaded.version
        trained = loaded.metadata.get("window")
    started = time.perf_counter()
    with ManagedJob(f"backtest {spec.symbol}") as job:
        store = open_store(cfg)
        job.on_exit(store.close)
        total = store.count_range(spec.symbol, spec.start_ts, spec.end_ts)
        if total == 0:
            raise ValueError(f"no {spec.symbol} bars stored in the range "
                             f"[{utc(spec.start_ts)}, {utc(spec.end_ts)}): import or download "
                             "them first")
        state = BacktestState(chart_stride=max(1, total // 2000),
                              keep_decisions=spec.keep_decisions)
        engine = TradingEngine(cfg, state, spec.symbol, timeframe,
                               PaperBroker(FillModel.from_config(cfg)), strategy)
        loop = _Loop(cfg, engine, model_set, version, timeframe)
        sizer = ChunkSizer(job.memory, cfg.get("backtest.chunk_bars"),
                           cfg.get("backtest.min_chunk_bars"),
                           strategy.bytes_per_bar, cfg.get("backtest.memory_fraction"))
        context = store.collect(spec.symbol, None, spec.start_ts,
                                then=lambda lazy: lazy.tail(loop.context_bars))
        loop.warm(context)
        cursor, done, chunks, first_close, last_close = spec.start_ts, 0, 0, None, None
        mode = ResourceMode(cfg)
        while cursor < spec.end_ts:
            size = sizer.next(halve=mode.current() == "low_resource")
            before = job.memory.process_bytes()
            # a window of `size` bars' time: only it is read (and deduplicated, sorted)
            window_end = min(spec.end_ts, cursor + size * timeframe)
            chunk = store.collect(spec.symbol, cursor, window_end)
            cursor = window_end
            if chunk.is_empty():
                continue
            grew = loop.run(chunk, job.memory)
            sizer.observe(chunk.height, grew - before)
            first_close = first_close if first_close is not None else float(chunk["close"][0])
            last_close = float(chunk["close"][-1])
            done += chunk.height
            chunks += 1
            del chunk
            if progress:
                progress(done, total)
        trades = round_trips(state.fills(0, 10**9))
        fees = sum(f["fee"] for f in state.fill_rows)
        metrics = compute(state.equity, trades, start_ts=spec.start_ts,
                          end_ts=state.equity.last_ts + timeframe if state.equity.last_ts
                          else spec.end_ts, first_close=first_close or 0.0,
                          last_close=last_close or 0.0, fees_paid=fees,
                          rejected=loop.vetoes, starting_cash=cfg.get("paper.starting_cash"))
        metrics["actions"] = dict(state.actions)
        metrics["decided_without_prediction"] = loop.without_prediction
        open_positions = open_at_end(engine, last_close)
        metrics["open_positions"] = len(open_positions)
        metrics["total_return_after_close"] = (
            metrics["final_equity"] - sum(p["cost_to_close"] for p in open_positions)
        ) / metrics["starting_equity"] - 1.0
        metrics["in_sample"] = in_sample(spec.start_ts, spec.end_ts, version, trained,
                                         timeframe)
    wall = time.perf_counter() - started
    run = {"wall_s": round(wall, 3), "bars_per_s": round(done / wall) if wall else None,
           "chunks": chunks, "chunk_sizes": sizer.sizes[:20], "peak_bytes": job.peak_bytes,
           "cap_bytes": job.cap_bytes}
    log.info("backtest %s %s: %d bars in %.1f s (%d chunks), %d trades, return %.4f", spec.symbol,
             strategy.name, done, wall, chunks, len(trades), metrics["total_return"])
    return BacktestResult(spec, strategy.name, version, metrics, trades,
                          open_positions, headline(metrics, open_positions, spec.symbol),
                          monthly_returns(state.equity, cfg.get("paper.starting_cash")),
                          state.equity_curve(0, 10**9), list(state.equity.daily),
                          state.decisions(0, 10**9),
                          {"strategy": cfg.section("strategy"), "risk": cfg.section("risk"),
                           "paper": cfg.section("paper"),
                           "model": {"horizon_bars": cfg.get("model.horizon_bars"),
                                     "max_gap_bars": cfg.get("model.max_gap_bars")}}, run)


class ResourceMode:
    """The monitor's resource mode, read from its cache snapshot (``monitor:mode``) at most
    every ``every_s``; "normal" when the cache or the monitor is not there."""

    def __init__(self, cfg: Config, every_s: float = 10.0) -> None:
        self.cfg, self.every_s = cfg, every_s
        self.mode, self.read_at = "normal", -1e9

    def current(self) -> str:
        if time.monotonic() - self.read_at >= self.every_s:
            self.read_at = time.monotonic()
            from shared.bus.cache_client import CacheClient
            from shared.bus.client import BusError
            from shared.protocol.cache_keys import MONITOR_MODE

            try:
                client = CacheClient(self.cfg, timeout_ms=200, retries=0)
                try:
                    self.mode = (client.get(MONITOR_MODE.name) or {}).get("mode", "normal")
                finally:
                    client.close()
            except BusError:
                self.mode = "normal"
        return self.mode


class _Loop:
    """Bar by bar through the engine; batched inference per chunk for a model strategy."""

    def __init__(self, cfg: Config, engine: TradingEngine, model: Any, version: str | None,
                 timeframe: int) -> None:
        self.engine, self.model, self.version, self.timeframe = engine, model, version, timeframe
        self.max_gap = cfg.get("model.max_gap_bars")
        self.context_bars = max(WARMUP_BARS, cfg.get("model.garch_warmup_bars")) + 1
        self.vol = None
        if model is not None:      # model code (lightgbm, …) only for a strategy that predicts
            from shared.models.model_set import VolatilityFeed, VolatilityTrack

            self.vol = VolatilityFeed(VolatilityTrack(model.garch,
                                                      cfg.get("model.garch_warmup_bars")),
                                      timeframe, self.max_gap)
        self.tail = pl.DataFrame()          # the bars before the chunk its features need
        self.vetoes: dict[str, int] = {}
        self.without_prediction = 0

    def warm(self, context: pl.DataFrame) -> None:
        """The bars just before the range: the GARCH state and features start from them."""
        if self.vol is not None:
            for ts, close in context.select("ts", "close").iter_rows():
                self.vol.fold(ts, close)
        self.tail = context.tail(WARMUP_BARS + 1)

    def run(self, chunk: pl.DataFrame, memory: SliceMemory) -> int:
        """Decide every bar of ``chunk``; returns the process memory at the chunk's peak."""
        er = p_up = complete = None
        offset = 0
        if self.model is not None:
            from shared.backtest.inference import predict_frame

            frame = pl.concat([self.tail.select(chunk.columns), chunk]) if \
                not self.tail.is_empty() else chunk
            offset = frame.height - chunk.height
            er, p_up, complete = predict_frame(self.model, frame, self.timeframe, self.max_gap)
        peak = memory.process_bytes()
        engine, symbol = self.engine, self.engine.symbol
        has_trades = "trades" in chunk.columns
        for i, row in enumerate(chunk.iter_rows()):
            ts, o, h, lo, c, v = row[:6]
            bar = Bar(symbol, ts, o, h, lo, c, v, row[6] if has_trades else 0)
            vol = self.vol.fold(ts, c) if self.vol is not None else None
            prediction = None
            if complete is not None and complete[offset + i] and vol is not None:
                prediction = Prediction(symbol, ts, float(er[offset + i]),
                                        float(p_up[offset + i]), vol, self.version)
            elif self.model is not None:
                self.without_prediction += 1
            planned = engine.decide(bar, prediction, 0.0, self.version)
            if planned is None:
                continue
            intent = planned[0]
            for veto in intent.tags.get("risk", ()):
                rule = veto.split(":")[0].split(" (")[0]
                self.vetoes[rule] = self.vetoes.get(rule, 0) + 1
            decision = engine.execute(bar, *planned, prediction)
            if decision.limited:
                rule = f"{decision.limited}: {'reduced' if decision.qty else 'refused'}"
                self.vetoes[rule] = self.vetoes.get(rule, 0) + 1
        self.tail = chunk.tail(WARMUP_BARS + 1)
        return peak


def open_at_end(engine: TradingEngine, mark: float | None) -> list[dict[str, Any]]:
    """The position still held when the range ends, as a report lists it: quantity, average
    entry, the mark (the last close), the unrealised P&L at the mark (fees already paid are
    in the realised P&L), and what closing it with a market order would cost by the fill
    model (spread, slippage, taker fee). [] when flat."""
    p = engine.position
    if p.is_flat or mark is None:
        return []
    fm = engine.fill_model
    exit_price = fm.sell_price(mark) if p.qty > 0 else fm.buy_price(mark)
    cost = abs(p.qty) * (abs(mark - exit_price) + exit_price * fm.fee_taker)
    return [{"symbol": p.symbol, "qty": p.qty, "avg_price": p.avg_price, "mark": mark,
             "unrealized_pnl": p.unrealized(mark), "cost_to_close": cost}]


def in_sample(start_ts: int, end_ts: int, version: str | None,
              window: dict[str, Any] | None, timeframe: int) -> dict[str, Any] | None:
    """How much of [start_ts, end_ts) lies inside the model's training window (the bars its
    training run saw, ``metadata.window`` from_ts to the end of the to_ts bar, holdout
    included; ``timeframe``: a bar's length in ms): ``share`` of the
    range's time, 0 = wholly out of sample. None when no registry model was used (no model,
    or a walk-forward fold's, trained before its test window)."""
    if not window or "from_ts" not in window or "to_ts" not in window or end_ts <= start_ts:
        return None
    lo, hi = max(start_ts, int(window["from_ts"])), min(end_ts, int(window["to_ts"]) + timeframe)
    return {"model_version": version, "from_ts": int(window["from_ts"]),
            "to_ts": int(window["to_ts"]), "share": max(0, hi - lo) / (end_ts - start_ts)}


def headline(metrics: dict[str, Any], open_positions: list[dict[str, Any]],
             symbol: str) -> list[str]:
    """One sentence per thing a reader must know before trusting the figures: each position
    still open at the end, entries reduced or refused (by buying power or a risk limit, with
    counts), and the share of the range inside the model's training window."""
    from shared.market.bars import ts_text

    lines = []
    for p in open_positions:
        lines.append(f"position open at the end: {p['qty']:.12g} {p['symbol']} bought at "
                     f"{p['avg_price']:,.8g}, marked at {p['mark']:,.8g}: unrealised "
                     f"{p['unrealized_pnl']:+,.2f}, closing it would cost "
                     f"{p['cost_to_close']:,.2f}; the return counts it at the mark "
                     f"({metrics['total_return_after_close']:+.2%} after closing)")
    limited = metrics.get("rejected_entries") or {}
    if limited:
        parts = ", ".join(f"{rule} ×{n:,}" for rule, n in
                          sorted(limited.items(), key=lambda kv: -kv[1]))
        lines.append(f"orders reduced or refused: {parts}")
    sample = metrics.get("in_sample")
    if sample and sample["share"] > 0:
        lines.append(f"in sample: {sample['share']:.0%} of the range lies inside model "
                     f"{sample['model_version']}'s training window "
                     f"({ts_text(sample['from_ts'])} → {ts_text(sample['to_ts'])}): "
                     f"those figures overstate what it could do")
    if not lines:
        lines.append(f"{symbol}: no open position at the end, no order reduced or refused"
                     + (", out of sample" if sample else ""))
    return lines
