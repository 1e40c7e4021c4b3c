"""The gate every bar passes before use: bad bars are rejected with a reason, never passed on."""

from __future__ import annotations

import math

import polars as pl

from shared.market.bars import Bar, utc, utc_expr


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
        return f"bar at {utc(bar.ts)} not aligned to the {timeframe} ms timeframe"
    if last_ts is not None:
        if bar.ts == last_ts:
            return f"duplicate bar at {utc(bar.ts)}"
        if bar.ts < last_ts:
            return f"time going backwards: bar at {utc(bar.ts)} after {utc(last_ts)}"
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


def frame_problems(df: pl.DataFrame, timeframe: int) -> pl.Series:
    """``bar_problem``'s per-bar rules over a frame (ts, open, high, low, close, volume): for
    each row the first problem, or null. Time order and duplicates are not judged here (a
    file is sorted and deduplicated instead). A test holds the two to the same answers."""
    o, h, lo, c, v = (pl.col(n) for n in ("open", "high", "low", "close", "volume"))
    prices = (o, h, lo, c)
    cols = ("ts", "open", "high", "low", "close", "volume")
    rules = [
        (pl.any_horizontal([pl.col(n).is_null() for n in cols]),
         pl.lit("empty or non-numeric value")),
        (~pl.all_horizontal([x.is_finite() for x in (*prices, v)]),
         pl.lit("non-finite value (NaN or inf)")),
        (pl.min_horizontal(prices) <= 0, pl.lit("non-positive price")),
        (v < 0, pl.lit("negative volume")),
        (h < lo, pl.format("high {} < low {}", h, lo)),
        (~((lo <= o) & (o <= h) & (lo <= c) & (c <= h)),
         pl.lit("open or close outside [low, high]")),
        (pl.col("ts") % timeframe != 0,
         pl.format("bar at {} not aligned to the {} ms timeframe", utc_expr(pl.col("ts")),
                   pl.lit(timeframe))),
    ]
    expr = pl.when(rules[0][0]).then(rules[0][1])
    for cond, text in rules[1:]:
        expr = expr.when(cond).then(text)
    return df.select(expr.otherwise(None).cast(pl.String).alias("problem")).to_series()
