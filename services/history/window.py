"""The rolling window of recent bars per symbol, in preallocated numpy rings.

Prices stay float64: the live features must equal the batch features a backtest computes
from the store, and float32 would shift a 30,000-dollar price by up to 0.002. Volume is
float32 and trade counts int32, where the precision allows (seed 000 §2.2).
"""

from __future__ import annotations

import numpy as np

from shared.market.bars import Bar


class RollingWindow:
    def __init__(self, symbol: str, capacity: int) -> None:
        self.symbol, self.capacity = symbol, capacity
        self.ts = np.zeros(capacity, np.int64)
        self.prices = np.zeros((capacity, 4), np.float64)   # open, high, low, close
        self.volume = np.zeros(capacity, np.float32)
        self.trades = np.zeros(capacity, np.int32)
        self.next = 0
        self.size = 0

    def append(self, bar: Bar) -> None:
        i = self.next
        self.ts[i] = bar.ts
        self.prices[i] = (bar.open, bar.high, bar.low, bar.close)
        self.volume[i] = bar.volume
        self.trades[i] = bar.trades
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def last_ts(self) -> int | None:
        return int(self.ts[(self.next - 1) % self.capacity]) if self.size else None

    def latest(self, n: int) -> list[Bar]:
        """The newest ``n`` bars (at most the window), oldest first."""
        n = min(n, self.size)
        idx = (np.arange(self.next - n, self.next)) % self.capacity
        return [Bar(self.symbol, int(self.ts[i]), *map(float, self.prices[i]),
                    float(self.volume[i]), int(self.trades[i])) for i in idx]

    @property
    def nbytes(self) -> int:
        return self.ts.nbytes + self.prices.nbytes + self.volume.nbytes + self.trades.nbytes
