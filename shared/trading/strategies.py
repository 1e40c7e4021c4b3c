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

**The registry.** A strategy class carries its name, how it is built from the settings
(``from_config``) and the backtest's first guess of its memory per bar (``bytes_per_bar``);
``@register_strategy`` files it under its name, and ``strategy_from_config`` builds the one
``strategy.name`` names — an unregistered name is a ConfigError naming the choices, never a
fallback. Config's ``strategy.name`` choices and ``bdt backtest --strategy`` are held to the
registry by tests/test_registries.py.
"""

from __future__ import annotations

import math
from collections import deque
from typing import ClassVar, Protocol, Self, TypeVar

from shared.config import Config, ConfigError
from shared.market.bars import Bar
from shared.trading.lots import floor_to_step
from shared.trading.strategy import StrategyParams, decide
from shared.trading.types import Intent, Position, Prediction


class Strategy(Protocol):
    name: ClassVar[str]               # its strategy.name, the registry's key
    needs_prediction: ClassVar[bool]
    bytes_per_bar: ClassVar[float]    # the backtest's first guess of memory a bar; then measured
    qty_step: float

    @classmethod
    def from_config(cls, cfg: Config) -> Self:
        """The strategy built from the ``[strategy]`` settings."""
        ...

    def decide(self, bar: Bar, prediction: Prediction | None, position: Position,
               equity: float, cost_per_side: float, timeframe_ms: int,
               fallback_volatility: float | None) -> Intent:
        """The target position after the closed ``bar``, with the reason."""
        ...


S = TypeVar("S", bound=Strategy)
_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[S]) -> type[S]:
    """Class decorator: file ``cls`` under ``cls.name``. TypeError when it lacks a part of
    ``Strategy``; ValueError when another class already has that name (re-registering the same
    class is a no-op)."""
    missing = [part for part in ("name", "needs_prediction", "bytes_per_bar", "from_config",
                                 "decide") if not hasattr(cls, part)]
    if missing:
        raise TypeError(f"{cls.__qualname__} is not a strategy: no {', '.join(missing)}")
    taken = _REGISTRY.get(cls.name)
    if taken is not None and taken is not cls:
        raise ValueError(f"strategy {cls.name!r} is already registered "
                         f"({taken.__module__}.{taken.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def strategy_names() -> tuple[str, ...]:
    """The registered strategies' names, in registration order."""
    return tuple(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; ConfigError naming the choices when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"strategy.name: expected one of {', '.join(_REGISTRY)}, "
                          f"got {name!r}") from None


@register_strategy
class MlStrategy:
    """The model-driven rules of shared.trading.strategy."""

    name = "ml"
    needs_prediction = True
    bytes_per_bar = 1200.0

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        self.qty_step = params.qty_step

    @classmethod
    def from_config(cls, cfg: Config) -> MlStrategy:
        return cls(StrategyParams.from_config(cfg))

    def decide(self, bar: Bar, prediction: Prediction | None, position: Position,
               equity: float, cost_per_side: float, timeframe_ms: int,
               fallback_volatility: float | None) -> Intent:
        return decide(bar, prediction, position, equity, self.params, cost_per_side,
                      timeframe_ms, fallback_volatility)


@register_strategy
class SmaCross:
    """Long-only SMA crossover. A cross is the fast SMA strictly below the slow one on the
    previous bar and strictly above it now (or the reverse) — backtesting.py's ``crossover``
    (``a[-2] < b[-2] and a[-1] > b[-1]``), so a tie is not a cross."""

    name = "sma_cross"
    needs_prediction = False
    bytes_per_bar = 600.0

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

    @classmethod
    def from_config(cls, cfg: Config) -> SmaCross:
        s = cfg.section("strategy")
        return cls(s["sma_fast"], s["sma_slow"], s["sma_size"], s["sma_size_mode"],
                   s["qty_step"])

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


STRATEGIES = strategy_names()     # the built-ins: config's strategy.name choices


def strategy_from_config(cfg: Config) -> Strategy:
    """The strategy registered as ``strategy.name``, built from its settings; ConfigError
    naming the choices for a name no class is registered under."""
    return strategy_class(cfg.get("strategy.name")).from_config(cfg)
