"""Strategies are named plug-ins, the same objects for the live bot and the backtest
(``strategy.name`` in config picks one):

- ``ml`` (the default): the model's prediction against costs and a threshold, sized to a
  volatility target, with a stop, a time limit and exits on an opposite signal
  (shared.trading.strategy.decide);
- ``sma_cross``: long-only crossover of a fast and a slow simple moving average of closes —
  buy when the fast SMA crosses above the slow one, close when it crosses below — with a fixed
  quantity or a fraction of equity. No model: it exists so the engine can be checked against
  other engines on the same rules (bench/backtest.py runs backtesting.py beside it).

A strategy sees one closed bar at a time (``decide``) and keeps whatever state it needs; it
never sees a later bar. ``needs_prediction`` tells the risk manager whether an entry without a
prediction must be blocked.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from shared.config import Config
from shared.market.bars import Bar
from shared.trading.lots import floor_to_step
from shared.trading.strategy import StrategyParams, decide
from shared.trading.types import Intent, Position, Prediction


class Strategy(Protocol):
    name: str
    needs_prediction: bool
    qty_step: float

    def decide(self, bar: Bar, prediction: Prediction | None, position: Position,
               equity: float, cost_per_side: float, timeframe_ms: int,
               fallback_volatility: float | None) -> Intent:
        """The target position after the closed ``bar``, with the reason."""
        ...


class MlStrategy:
    """The model-driven rules of shared.trading.strategy."""

    name = "ml"
    needs_prediction = True

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        self.qty_step = params.qty_step

    def decide(self, bar: Bar, prediction: Prediction | None, position: Position,
               equity: float, cost_per_side: float, timeframe_ms: int,
               fallback_volatility: float | None) -> Intent:
        return decide(bar, prediction, position, equity, self.params, cost_per_side,
                      timeframe_ms, fallback_volatility)


class SmaCross:
    """Long-only SMA crossover. A cross is the fast SMA strictly below the slow one on the
    previous bar and strictly above it now (or the reverse) — backtesting.py's ``crossover``
    (``a[-2] < b[-2] and a[-1] > b[-1]``), so a tie is not a cross."""

    name = "sma_cross"
    needs_prediction = False

    def __init__(self, fast: int, slow: int, size: float, size_mode: str,
                 qty_step: float) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"strategy.sma_fast must be ≥ 1 and < sma_slow, got {fast}, {slow}")
        if not (math.isfinite(size) and size > 0):
            raise ValueError(f"strategy.sma_size must be a positive number, got {size!r}")
        self.fast, self.slow, self.size, self.size_mode = fast, slow, size, size_mode
        self.qty_step = qty_step
        self.closes: deque[float] = deque(maxlen=slow)
        self.prev: tuple[float, float] | None = None      # (fast, slow) SMA of the bar before

    def decide(self, bar: Bar, prediction: Prediction | None, position: Position,
               equity: float, cost_per_side: float, timeframe_ms: int,
               fallback_volatility: float | None) -> Intent:
        self.closes.append(bar.close)
        if len(self.closes) < self.slow:
            return Intent(position.qty, f"warming up: {len(self.closes)} of {self.slow} closes")
        closes = list(self.closes)
        fast = math.fsum(closes[-self.fast:]) / self.fast
        slow = math.fsum(closes) / self.slow
        prev, self.prev = self.prev, (fast, slow)
        if prev is None:
            return Intent(position.qty, "first SMA pair: no cross yet")
        if prev[0] < prev[1] and fast > slow and position.is_flat:
            qty = self.size if self.size_mode == "qty" else equity * self.size / bar.close
            qty = floor_to_step(qty, self.qty_step)
            return Intent(qty, f"golden cross: SMA{self.fast} {fast:.2f} > SMA{self.slow} "
                               f"{slow:.2f}", tags={"fast": fast, "slow": slow})
        if prev[0] > prev[1] and fast < slow and not position.is_flat:
            return Intent(0.0, f"death cross: SMA{self.fast} {fast:.2f} < SMA{self.slow} "
                               f"{slow:.2f}", tags={"fast": fast, "slow": slow})
        return Intent(position.qty, "no cross")


STRATEGIES = ("ml", "sma_cross")


def strategy_from_config(cfg: Config) -> MlStrategy | SmaCross:
    """The strategy named by ``strategy.name``, built from its settings."""
    name = cfg.get("strategy.name")
    if name == "sma_cross":
        s = cfg.section("strategy")
        return SmaCross(s["sma_fast"], s["sma_slow"], s["sma_size"], s["sma_size_mode"],
                        s["qty_step"])
    return MlStrategy(StrategyParams.from_config(cfg))
