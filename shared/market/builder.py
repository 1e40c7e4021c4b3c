"""Time bars from a trade stream (the live feed builds its bars with this)."""

from __future__ import annotations

from shared.market.bars import Bar, Trade


class BarBuilder:
    """Time bars from a trade stream. Intervals without trades produce no bar (a gap)."""

    def __init__(self, symbol: str, timeframe: int) -> None:
        self.symbol, self.timeframe = symbol, timeframe
        self._ts: int | None = None
        self._o = self._h = self._l = self._c = 0.0
        self._v = 0.0
        self._n = 0
        self._closed_until = -(1 << 62)   # trades before this belong to bars already closed
        self.late_trades = 0

    def _close(self) -> Bar:
        assert self._ts is not None
        bar = Bar(self.symbol, self._ts, self._o, self._h, self._l, self._c, self._v, self._n)
        self._closed_until = self._ts + self.timeframe
        self._ts = None
        return bar

    def add(self, trade: Trade) -> Bar | None:
        """Add a trade; returns the bar it closed, if any."""
        start = trade.ts - trade.ts % self.timeframe
        closed = None
        if start < self._closed_until or (self._ts is not None and start < self._ts):
            self.late_trades += 1   # belongs to a bar already closed: counted, not re-opened
            return None
        if self._ts is not None and start > self._ts:
            closed = self._close()
        if self._ts is None:
            self._ts, self._n = start, 0
            self._o = self._h = self._l = trade.price
            self._v = 0.0
        self._h = max(self._h, trade.price)
        self._l = min(self._l, trade.price)
        self._c = trade.price
        self._v += trade.amount
        self._n += 1
        return closed

    def close_due(self, now_ms: int) -> Bar | None:
        """Close the open bar once its interval has ended, without waiting for the next trade."""
        if self._ts is not None and now_ms >= self._ts + self.timeframe:
            return self._close()
        return None
