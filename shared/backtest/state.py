"""The trading state of a backtest: ``MemoryState`` (the engine's state without a database)
that keeps what a report needs in bounded memory however long the range — the equity curve
folded into running figures as it comes (drawdown, exposure, daily closes, a chart of at most
``chart_points`` points), decisions counted, and every decision kept only inside
``keep_decisions`` (a window, for the parity check)."""

from __future__ import annotations

from typing import Any

from shared.trading.memory_state import MemoryState
from shared.trading.types import Prediction

DAY_MS = 86_400_000


class EquityTracker:
    """Running equity figures, O(1) per bar; memory O(days + chart points)."""

    def __init__(self, chart_stride: int) -> None:
        self.stride = max(1, chart_stride)
        self.bars = 0
        self.bars_in_market = 0
        self.first: float | None = None
        self.last: float | None = None
        self.last_ts: int | None = None
        self.peak = 0.0
        self.peak_ts: int | None = None
        self.max_drawdown = 0.0              # fraction of the peak
        self.max_drawdown_ts: int | None = None
        self.longest_drawdown_ms = 0         # peak to recovery (or to the end)
        self.daily: list[tuple[int, float]] = []      # (day start ts, equity at the day's close)
        self.chart: list[tuple[int, float, float]] = []   # (ts, equity, drawdown)

    def add(self, ts: int, equity: float, in_market: bool) -> None:
        if self.first is None:
            self.first, self.peak, self.peak_ts = equity, equity, ts
        self.bars += 1
        self.bars_in_market += in_market
        if equity >= self.peak:
            if self.peak_ts is not None:
                self.longest_drawdown_ms = max(self.longest_drawdown_ms, ts - self.peak_ts)
            self.peak, self.peak_ts = equity, ts
        drawdown = 1.0 - equity / self.peak if self.peak > 0 else 0.0
        if drawdown > self.max_drawdown:
            self.max_drawdown, self.max_drawdown_ts = drawdown, ts
        day = ts - ts % DAY_MS
        if self.daily and self.daily[-1][0] == day:
            self.daily[-1] = (day, equity)
        else:
            self.daily.append((day, equity))
        if (self.bars - 1) % self.stride == 0:
            self.chart.append((ts, equity, drawdown))
        self.last, self.last_ts = equity, ts

    def finish(self) -> None:
        """The drawdown still open at the end counts toward the longest."""
        if self.last_ts is not None and self.peak_ts is not None:
            self.longest_drawdown_ms = max(self.longest_drawdown_ms, self.last_ts - self.peak_ts)
        if self.chart and self.last_ts is not None and self.chart[-1][0] != self.last_ts:
            self.chart.append((self.last_ts, self.last or 0.0,
                               1.0 - (self.last or 0.0) / self.peak if self.peak else 0.0))


class BacktestState(MemoryState):
    """``MemoryState`` with the equity curve and decisions kept bounded (see module doc).

    ``keep_decisions``: (start, end) epoch ms; decisions with start ≤ bar_ts < end are kept
    whole, others only counted by action."""

    def __init__(self, chart_stride: int = 1,
                 keep_decisions: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.equity = EquityTracker(chart_stride)
        self.keep = keep_decisions
        self.actions: dict[str, int] = {}

    def record_decision(self, conn: Any, symbol: str, bar_ts: int, close: float,
                        prediction: Prediction | None, action: str, target_qty: float,
                        reason: str) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1
        if self.keep is not None and self.keep[0] <= bar_ts < self.keep[1]:
            super().record_decision(conn, symbol, bar_ts, close, prediction, action,
                                    target_qty, reason)

    def record_equity(self, conn: Any, ts: int, equity: float, cash: float,
                      position_value: float) -> None:
        self.equity.add(ts, equity, position_value != 0.0)

    def equity_curve(self, since_ts: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """The chart's points (the curve itself is not kept)."""
        return [{"ts": ts, "equity": e, "drawdown": d} for ts, e, d in self.equity.chart
                if ts >= since_ts][-limit:]
