"""Risk limits checked before every order, and the small state they need across restarts.

The rule that overrides all others: reducing exposure is always allowed, so a stop or an exit
is never blocked. Only opening or increasing exposure can be blocked or clipped. No I/O and no
clock: bar times and prediction ages are passed in, and the bot persists ``RiskState`` as JSON.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.config import Config
from shared.market.bars import Bar, utc
from shared.protocol.events import MODES
from shared.trading.account import day_pnl
from shared.trading.lots import floor_to_step
from shared.trading.types import Intent, Position, Prediction

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_day(ts_ms: int) -> str:
    """'YYYY-MM-DD' of an epoch-ms time, in UTC (integer arithmetic, no float rounding)."""
    return _day_text(ts_ms // 86_400_000)


@functools.lru_cache(maxsize=64)
def _day_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).date().isoformat()


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) \
        and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_position_qty: float      # base units; 0 = no cap in base units
    max_notional: float          # quote currency
    daily_loss_limit: float      # quote currency, from the UTC day's starting equity
    max_drawdown: float          # fraction of peak equity
    max_prediction_age_s: float
    losses_before_cooldown: int
    cooldown_bars: int

    def __post_init__(self) -> None:
        if not (_finite(self.max_position_qty) and self.max_position_qty >= 0):
            raise ValueError(f"risk.max_position_qty must be a finite number ≥ 0 (0: no cap), "
                             f"got {self.max_position_qty!r}")
        for name in ("max_notional", "daily_loss_limit", "max_prediction_age_s"):
            if not (_finite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"risk.{name} must be a positive finite number, got "
                                 f"{getattr(self, name)!r}")
        if not (_finite(self.max_drawdown) and 0 < self.max_drawdown < 1):
            raise ValueError(f"risk.max_drawdown must be in (0, 1), got {self.max_drawdown!r}")
        for name in ("losses_before_cooldown", "cooldown_bars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"risk.{name} must be an integer ≥ 1, got {value!r}")

    @classmethod
    def from_config(cls, cfg: Config) -> RiskLimits:
        s = cfg.section("risk")
        return cls(max_position_qty=s["max_position_qty"], max_notional=s["max_notional"],
                   daily_loss_limit=s["daily_loss_limit"], max_drawdown=s["max_drawdown"],
                   max_prediction_age_s=s["max_prediction_age_s"],
                   losses_before_cooldown=s["losses_before_cooldown"],
                   cooldown_bars=s["cooldown_bars"])


@dataclass(slots=True)
class RiskState:
    """Persisted by the bot as JSON. day == "" means no bar seen yet; peak_equity == 0 means
    the next bar's equity becomes the peak."""

    day: str = ""                  # UTC date (YYYY-MM-DD) of the last bar
    day_start_equity: float = 0.0
    peak_equity: float = 0.0
    consecutive_losses: int = 0
    cooldown_until_ts: int = 0     # ms; opening is blocked while bar.ts < this
    killed: bool = False
    kill_reason: str = ""
    paused: bool = False
    mode: str = "normal"           # normal | low_resource | critical
    day_loss_hit: bool = False     # the daily loss limit was reached today: latched to midnight

    def to_dict(self) -> dict[str, Any]:
        # not dataclasses.asdict: that deep-copies and costs ~60 µs, on every bar
        return {name: getattr(self, name) for name in _RISK_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RiskState:
        """Validate a persisted state; ValueError names the first bad field."""
        if not isinstance(d, dict):
            raise ValueError(f"risk state must be a dict, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"risk state field {unknown[0]!r}: unknown field")
        for name in names:
            if name not in d:
                raise ValueError(f"risk state field {name!r}: missing")
        day = d["day"]
        if not isinstance(day, str):
            raise ValueError(f"risk state field 'day' must be a string, got {day!r}")
        if day:
            try:
                date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"risk state field 'day' must be YYYY-MM-DD or '', "
                                 f"got {day!r}") from None
        if not _finite(d["day_start_equity"]):
            raise ValueError(f"risk state field 'day_start_equity' must be a finite number, "
                             f"got {d['day_start_equity']!r}")
        if not (_finite(d["peak_equity"]) and d["peak_equity"] >= 0):
            raise ValueError(f"risk state field 'peak_equity' must be a finite number ≥ 0, "
                             f"got {d['peak_equity']!r}")
        for name in ("consecutive_losses", "cooldown_until_ts"):
            value = d[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"risk state field {name!r} must be an integer ≥ 0, "
                                 f"got {value!r}")
        for name in ("killed", "paused", "day_loss_hit"):
            if not isinstance(d[name], bool):
                raise ValueError(f"risk state field {name!r} must be true or false, "
                                 f"got {d[name]!r}")
        if not isinstance(d["kill_reason"], str):
            raise ValueError(f"risk state field 'kill_reason' must be a string, "
                             f"got {d['kill_reason']!r}")
        if d["mode"] not in MODES:
            raise ValueError(f"risk state field 'mode' must be one of {', '.join(MODES)}, "
                             f"got {d['mode']!r}")
        return cls(day=day, day_start_equity=float(d["day_start_equity"]),
                   peak_equity=float(d["peak_equity"]),
                   consecutive_losses=d["consecutive_losses"],
                   cooldown_until_ts=d["cooldown_until_ts"], killed=d["killed"],
                   kill_reason=d["kill_reason"], paused=d["paused"], mode=d["mode"],
                   day_loss_hit=d["day_loss_hit"])


_RISK_FIELDS = tuple(f.name for f in fields(RiskState))


class RiskManager:
    """Call ``on_bar`` on every closed bar, ``on_trade_closed`` when a position goes flat, and
    ``review`` on every intent before it becomes an order.

    ``qty_step`` (optional): when given, a quantity clipped by the limits is rounded down to
    it, so a clipped order is still a valid lot and still within the limit."""

    def __init__(self, limits: RiskLimits, state: RiskState, timeframe_ms: int,
                 *, qty_step: float | None = None) -> None:
        if timeframe_ms <= 0:
            raise ValueError(f"timeframe_ms must be positive, got {timeframe_ms!r}")
        self.limits, self.state, self.timeframe_ms = limits, state, timeframe_ms
        self.qty_step = qty_step

    # ---- state updates ----

    def on_bar(self, bar: Bar, equity: float) -> None:
        """Roll the UTC day (new day → its starting equity is this equity), raise the peak,
        and trip the kill switch when the drawdown from the peak reaches max_drawdown."""
        if not _finite(equity):
            raise ValueError(f"equity must be a finite number, got {equity!r}")
        s = self.state
        day = utc_day(bar.ts)
        if day != s.day:
            s.day, s.day_start_equity, s.day_loss_hit = day, equity, False
        s.peak_equity = max(s.peak_equity, equity)
        if s.peak_equity > 0 and not s.killed:
            drawdown = (s.peak_equity - equity) / s.peak_equity
            if drawdown >= self.limits.max_drawdown:
                s.killed = True
                s.kill_reason = (f"drawdown {drawdown:.4f} ≥ max_drawdown "
                                 f"{self.limits.max_drawdown:.4f} (equity {equity:.2f}, "
                                 f"peak {s.peak_equity:.2f}) at the bar of {utc(bar.ts)}")

    def on_trade_closed(self, realized_pnl: float, bar_ts: int) -> None:
        """A loss (pnl < 0) counts; anything else resets the count. At losses_before_cooldown
        consecutive losses, opening is blocked for bars with ts in
        [bar_ts, bar_ts + cooldown_bars × timeframe) and the count restarts."""
        if not _finite(realized_pnl):
            raise ValueError(f"realized_pnl must be a finite number, got {realized_pnl!r}")
        s = self.state
        if realized_pnl >= 0:
            s.consecutive_losses = 0
            return
        s.consecutive_losses += 1
        if s.consecutive_losses >= self.limits.losses_before_cooldown:
            s.cooldown_until_ts = bar_ts + self.limits.cooldown_bars * self.timeframe_ms
            s.consecutive_losses = 0

    # ---- operator controls ----

    def pause(self) -> None:
        """Operator: stop opening positions (exits still go through)."""
        self.state.paused = True

    def resume(self) -> None:
        self.state.paused = False

    def set_mode(self, mode: str) -> None:
        """Resource mode from the monitor; "critical" blocks opening."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.state.mode = mode

    def reset_kill(self) -> None:
        """Operator only, after investigating: clear the kill switch. The peak is forgotten
        (the next bar's equity becomes the new peak); otherwise the very next bar would trip
        the switch again on the same drawdown."""
        self.state.killed, self.state.kill_reason = False, ""
        self.state.peak_equity = 0.0

    # ---- the check before every order ----

    def review(self, intent: Intent, *, position: Position, bar: Bar,
               prediction: Prediction | None, prediction_age_s: float,
               expected_model_version: str | None, equity: float,
               requires_prediction: bool = True) -> tuple[Intent, list[str]]:
        """The approved intent and the reasons for every change made to it.

        Any target between 0 and the current qty (inclusive) only reduces exposure and is
        never blocked. Killed → target 0. Otherwise a target outside that range opens or adds
        exposure: if any blocking rule applies it is clamped into the range (the current qty,
        or 0 for a flip — the reducing part of a flip still goes through), else it is clipped
        to max_position_qty and max_notional (never below the current qty).
        """
        if not _finite(equity):
            raise ValueError(f"equity must be a finite number, got {equity!r}")
        if not (_finite(bar.close) and bar.close > 0):
            raise ValueError(f"bar close must be a positive finite number, got {bar.close!r}")
        s, lim = self.state, self.limits
        current = 0.0 if position.is_flat else position.qty
        target = intent.target_qty
        reasons: list[str] = []
        if not _finite(target):
            reasons.append(f"invalid target {target!r}: hold")
            target = current

        if s.killed:
            if target != 0.0:
                reasons.append(f"kill switch: flatten ({s.kill_reason})")
            return self._approved(intent, 0.0, reasons)

        lo, hi = min(0.0, current), max(0.0, current)
        if lo <= target <= hi:
            return self._approved(intent, target, reasons)

        blocks = self._blocks(bar, prediction, prediction_age_s, expected_model_version, equity,
                              requires_prediction)
        if blocks:
            reasons.extend(blocks)
            return self._approved(intent, min(max(target, lo), hi), reasons)

        side = 1.0 if target > 0 else -1.0
        allowed = lim.max_position_qty or math.inf
        limit_name = f"max_position_qty {lim.max_position_qty:g}"
        by_notional = lim.max_notional / bar.close
        if by_notional < allowed:
            allowed = by_notional
            limit_name = f"max_notional {lim.max_notional:.2f} at close {bar.close:.2f}"
        if abs(target) > allowed:
            if self.qty_step:
                allowed = floor_to_step(allowed, self.qty_step)
            if current * side > allowed:   # already above the cap: no increase, no forced cut
                allowed = current * side
            reasons.append(f"clipped by {limit_name}: |target| {abs(target):g} → {allowed:g}")
            target = side * allowed
        return self._approved(intent, target, reasons)

    def _blocks(self, bar: Bar, prediction: Prediction | None, prediction_age_s: float,
                expected_model_version: str | None, equity: float,
                requires_prediction: bool = True) -> list[str]:
        """Every rule that forbids opening or adding exposure on this bar."""
        s, lim = self.state, self.limits
        out: list[str] = []
        if s.paused:
            out.append("paused by operator")
        if s.mode == "critical":
            out.append("critical resource mode")
        if s.day != utc_day(bar.ts):
            out.append(f"risk state not rolled to {utc_day(bar.ts)} (on_bar not called)")
        else:
            pnl = day_pnl(equity, s.day_start_equity)      # the one figure bdt shows
            loss = 0.0 if pnl is None else -pnl
            if loss >= lim.daily_loss_limit:
                s.day_loss_hit = True        # stays hit until the next UTC day, even if equity
            if s.day_loss_hit:               # recovers: no new positions for the rest of it
                out.append(f"daily loss limit: lost {loss:.2f} (limit "
                           f"{lim.daily_loss_limit:.2f}) today; no new positions until "
                           f"the next UTC day")
        if bar.ts < s.cooldown_until_ts:
            out.append(f"cooldown after losses: until {utc(s.cooldown_until_ts)}")
        if prediction is None:
            if requires_prediction:     # a strategy without a model (sma_cross) needs none
                out.append("no prediction")
            return out
        if prediction.symbol != bar.symbol:
            out.append(f"prediction for another symbol ({prediction.symbol}, bar {bar.symbol})")
        if prediction.bar_time != bar.ts:
            out.append(f"prediction for another bar (bar_time {utc(prediction.bar_time)}, "
                       f"bar {utc(bar.ts)})")
        if not (_finite(prediction_age_s) and prediction_age_s <= lim.max_prediction_age_s):
            out.append(f"stale prediction: age {prediction_age_s} s > "
                       f"{lim.max_prediction_age_s} s")
        if expected_model_version is not None \
                and prediction.model_version != expected_model_version:
            out.append(f"unexpected model version {prediction.model_version}, "
                       f"expected {expected_model_version}")
        return out

    @staticmethod
    def _approved(intent: Intent, target: float, reasons: list[str]) -> tuple[Intent, list[str]]:
        if not reasons:
            return intent, reasons
        return replace(intent, target_qty=target,
                       reason=f"{intent.reason}; risk: {'; '.join(reasons)}",
                       tags={**intent.tags, "risk": list(reasons)}), reasons
