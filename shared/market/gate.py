"""The gate every bar passes before use: bad bars are rejected with a reason, never passed on."""

from __future__ import annotations

import math

from shared.market.bars import Bar


def bar_problem(bar: Bar, timeframe: int, last_ts: int | None = None) -> str | None:
    """Why ``bar`` must be rejected, or None when it is fine."""
    values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    if not all(math.isfinite(v) for v in values):
        return "non-finite value (NaN or inf)"
    if min(bar.open, bar.high, bar.low, bar.close) <= 0:
        return "non-positive price"
    if bar.volume < 0:
        return "negative volume"
    if bar.high < bar.low:
        return f"high {bar.high} < low {bar.low}"
    if not (bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high):
        return "open or close outside [low, high]"
    if bar.ts % timeframe:
        return f"ts {bar.ts} not aligned to the {timeframe} ms timeframe"
    if last_ts is not None:
        if bar.ts == last_ts:
            return f"duplicate bar at ts {bar.ts}"
        if bar.ts < last_ts:
            return f"time going backwards: ts {bar.ts} after {last_ts}"
    return None


class BarGate:
    """Per-symbol memory of the last accepted bar, so duplicates and time reversals are caught."""

    def __init__(self, timeframe: int) -> None:
        self.timeframe = timeframe
        self.last_ts: dict[str, int] = {}
        self.rejected = 0

    def check(self, bar: Bar) -> str | None:
        problem = bar_problem(bar, self.timeframe, self.last_ts.get(bar.symbol))
        if problem is None:
            self.last_ts[bar.symbol] = bar.ts
        else:
            self.rejected += 1
        return problem
