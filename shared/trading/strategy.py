"""The trading rules: when to enter, how big, when to leave.

``decide`` is a pure function of the closed bar, the model's prediction, the position and the
equity; the live bot and the backtester call the same code, so a backtest measures exactly what
would have traded. Risk limits are applied afterwards by ``shared.risk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shared.config import Config
from shared.market.bars import Bar
from shared.trading.lots import floor_to_step
from shared.trading.types import Intent, Position, Prediction


@dataclass(frozen=True, slots=True)
class StrategyParams:
    entry_threshold: float    # net expected return (log) an entry must clear
    p_up_margin: float        # long needs p_up ≥ 0.5 + margin; short needs p_up ≤ 0.5 − margin
    allow_short: bool
    vol_target: float         # position × per-bar σ ≈ this fraction of equity
    max_hold_bars: int
    stop_vol_multiple: float  # stop when the adverse move exceeds this many per-bar σ
    qty_step: float           # lot size

    def __post_init__(self) -> None:
        def finite(name: str, low: float, strict: bool) -> None:
            value = getattr(self, name)
            bad = isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or (value <= low if strict else value < low)
            if bad:
                raise ValueError(f"strategy.{name} must be a finite number "
                                 f"{'>' if strict else '≥'} {low}, got {value!r}")

        finite("entry_threshold", 0.0, strict=False)
        finite("vol_target", 0.0, strict=True)
        finite("stop_vol_multiple", 0.0, strict=True)
        finite("qty_step", 0.0, strict=True)
        finite("p_up_margin", 0.0, strict=False)
        if self.p_up_margin >= 0.5:
            raise ValueError(f"strategy.p_up_margin must be < 0.5, got {self.p_up_margin!r}")
        if not isinstance(self.allow_short, bool):
            raise ValueError(f"strategy.allow_short must be true or false, got "
                             f"{self.allow_short!r}")
        if isinstance(self.max_hold_bars, bool) or not isinstance(self.max_hold_bars, int) \
                or self.max_hold_bars < 1:
            raise ValueError(f"strategy.max_hold_bars must be an integer ≥ 1, got "
                             f"{self.max_hold_bars!r}")

    @classmethod
    def from_config(cls, cfg: Config) -> StrategyParams:
        s = cfg.section("strategy")
        return cls(entry_threshold=s["entry_threshold"], p_up_margin=s["p_up_margin"],
                   allow_short=s["allow_short"], vol_target=s["vol_target"],
                   max_hold_bars=s["max_hold_bars"], stop_vol_multiple=s["stop_vol_multiple"],
                   qty_step=s["qty_step"])


def decide(bar: Bar, prediction: Prediction | None, position: Position, equity: float,
           params: StrategyParams, cost_per_side: float, timeframe_ms: int,
           fallback_volatility: float | None = None) -> Intent:
    """The target position for the bar that just closed, with the reason and the numbers.

    Flat: enter when the prediction clears costs + threshold and p_up agrees, sized to the
    volatility target. In a position, first match wins: stop, time limit, opposite signal
    (exit to flat; a new entry can only come on a later bar), else hold. Prices are
    ``bar.close``: the order goes out after the bar closed. Without a prediction (predictor
    down) an open position still gets its stop, measured with ``fallback_volatility`` (the
    last known), and its time limit: a dead predictor must not disable the exits.
    """
    if not (math.isfinite(cost_per_side) and cost_per_side >= 0):
        raise ValueError(f"cost_per_side must be a finite number ≥ 0, got {cost_per_side!r}")
    if timeframe_ms <= 0:
        raise ValueError(f"timeframe_ms must be positive, got {timeframe_ms!r}")
    if prediction is None:
        if not position.is_flat and fallback_volatility and fallback_volatility > 0:
            tags: dict[str, Any] = {"er": None, "costs": None, "p_up": None,
                                    "vol": fallback_volatility, "bars_held": None}
            intent = _manage(bar, position, params, timeframe_ms, tags, fallback_volatility,
                             math.nan, math.nan, False, False)
            return Intent(intent.target_qty, f"no prediction: {intent.reason}",
                          tags=intent.tags)
        return Intent(target_qty=position.qty, reason="no prediction: hold")
    if prediction.symbol != bar.symbol:
        return Intent(target_qty=position.qty, reason=f"prediction for {prediction.symbol}, "
                                                      f"bar for {bar.symbol}: hold")
    er, p_up, vol = prediction.expected_return, prediction.p_up, prediction.volatility
    if not (math.isfinite(er) and math.isfinite(p_up) and math.isfinite(vol) and vol > 0):
        return Intent(target_qty=position.qty,
                      reason=f"invalid prediction (er {er}, p_up {p_up}, vol {vol}): hold")
    costs = 2 * cost_per_side
    long_net, short_net = er - costs, -er - costs
    p_long, p_short = 0.5 + params.p_up_margin, 0.5 - params.p_up_margin
    long_signal = long_net > params.entry_threshold and p_up >= p_long
    short_signal = short_net > params.entry_threshold and p_up <= p_short
    tags = {"er": er, "costs": costs, "p_up": p_up, "vol": vol, "bars_held": None}

    if not position.is_flat:
        return _manage(bar, position, params, timeframe_ms, tags, vol,
                       long_net, short_net, long_signal, short_signal)

    if long_signal or (short_signal and params.allow_short):
        side = 1.0 if long_signal else -1.0
        net = long_net if long_signal else short_net
        tags["er_net"] = net
        raw = equity * params.vol_target / vol / bar.close
        qty = floor_to_step(raw, params.qty_step)
        tags.update(raw_qty=raw, qty=qty)
        if qty <= 0:
            return Intent(0.0, f"size rounds to zero: {raw:.8g} < step {params.qty_step:g}",
                          tags=tags)
        name, p_rule = ("long", f"p_up {p_up:.4f} ≥ {p_long:.4f}") if side > 0 \
            else ("short", f"p_up {p_up:.4f} ≤ {p_short:.4f}")
        return Intent(side * qty, f"{name}: er_net {net:.5f} > {params.entry_threshold:.5f}, "
                                  f"{p_rule}, qty {qty:g}", tags=tags)

    if short_signal:   # shorting disabled
        tags["er_net"] = short_net
        return Intent(0.0, f"no edge: short signal ignored (allow_short false): er_net "
                           f"{short_net:.5f}, p_up {p_up:.4f}", tags=tags)
    if er >= 0 or not params.allow_short:
        tags["er_net"] = long_net
        if not long_net > params.entry_threshold:
            reason = f"no edge: er {er:.5f} − costs {costs:.5f} ≤ {params.entry_threshold:.5f}"
        else:
            reason = f"no edge: p_up {p_up:.4f} < {p_long:.4f}"
    else:
        tags["er_net"] = short_net
        if not short_net > params.entry_threshold:
            reason = (f"no edge: −er {-er:.5f} − costs {costs:.5f} ≤ "
                      f"{params.entry_threshold:.5f}")
        else:
            reason = f"no edge: p_up {p_up:.4f} > {p_short:.4f}"
    return Intent(0.0, reason, tags=tags)


def _manage(bar: Bar, position: Position, params: StrategyParams, timeframe_ms: int,
            tags: dict[str, Any], vol: float, long_net: float, short_net: float,
            long_signal: bool, short_signal: bool) -> Intent:
    """Exit rules for an open position, in priority order: stop, time limit, opposite signal."""
    if not (math.isfinite(position.avg_price) and position.avg_price > 0):
        raise ValueError(f"open position with invalid avg_price {position.avg_price!r}")
    long = position.qty > 0
    adverse = ((position.avg_price - bar.close) if long else (bar.close - position.avg_price)) \
        / position.avg_price
    stop_at = params.stop_vol_multiple * vol
    # Unknown entry time (opened_ts None): the time limit cannot be measured and is skipped.
    bars_held = None if position.opened_ts is None \
        else (bar.ts - position.opened_ts) // timeframe_ms
    tags.update(er_net=long_net if long else short_net, adverse=adverse, stop_at=stop_at,
                bars_held=bars_held)
    if adverse > stop_at:
        return Intent(0.0, f"stop: adverse move {adverse:.5f} > {params.stop_vol_multiple:g} × "
                           f"vol {vol:.5f} = {stop_at:.5f}", tags=tags)
    if bars_held is not None and bars_held >= params.max_hold_bars:
        return Intent(0.0, f"time limit: held {bars_held} bars ≥ {params.max_hold_bars}",
                      tags=tags)
    if (long and short_signal) or (not long and long_signal):
        return Intent(0.0, f"opposite signal: {'short' if long else 'long'} er_net "
                           f"{short_net if long else long_net:.5f}, p_up {tags['p_up']:.4f}",
                      tags=tags)
    return Intent(position.qty, f"hold position: adverse {adverse:.5f} ≤ {stop_at:.5f}, "
                                f"held {bars_held} bars", tags=tags)
