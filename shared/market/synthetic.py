"""The embedded default's market: a seeded synthetic price path with the stylised facts that
matter to a day-trading model."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from shared.market.bars import Bar
from shared.market.files import OHLCV


class SyntheticMarket:
    """A seeded market with the stylised facts that matter to a day-trading model:
    GARCH(1,1) volatility clustering, Student-t (fat-tailed) shocks, rare jumps, an intraday
    volume pattern (busy afternoons UTC, quiet nights) whose level also rises with the size of
    the move, a mild short-horizon mean reversion (AR(1) on returns, ``phi``), and a slowly
    wandering drift (trending regimes lasting hours). The last two are *planted*, learnable
    structure so that the embedded demo has something to trade: profits on this data say
    nothing about real markets."""

    def __init__(self, symbol: str, timeframe: int, seed: int, start_ts: int = 1_700_000_040_000,
                 price: float = 30_000.0) -> None:
        self.symbol, self.timeframe = symbol, timeframe
        self.rng = np.random.default_rng(seed)
        self.ts = start_ts - start_ts % timeframe
        self.price = price
        scale = math.sqrt(timeframe / 60_000)
        # per-bar variance dynamics: long-run σ ≈ 0.08% per minute, persistence α+β = 0.97
        self.omega, self.alpha, self.beta = (0.0008 * scale) ** 2 * 0.03, 0.07, 0.90
        self.var = (0.0008 * scale) ** 2
        self.df = 4.0
        self.jump_prob, self.jump_scale = 0.002, 8.0
        self.phi = -0.12
        self.last_ret = 0.0
        # drift: AR(1) with half-life ~350 bars and a stationary sd of 0.15 long-run σ
        self.drift, self.rho = 0.0, 0.998
        self.drift_step = 0.15 * 0.0008 * scale * math.sqrt(1 - self.rho**2)

    def step(self) -> Bar:
        sigma = math.sqrt(self.var)
        shock = self.rng.standard_t(self.df) * math.sqrt((self.df - 2) / self.df)
        self.drift = self.rho * self.drift + self.drift_step * self.rng.standard_normal()
        noise = sigma * shock
        ret = self.drift + self.phi * self.last_ret + noise
        if self.rng.random() < self.jump_prob:
            ret += self.rng.normal(0.0, self.jump_scale * sigma)
        self.var = self.omega + self.alpha * (ret - self.drift - self.phi * self.last_ret) ** 2 \
            + self.beta * self.var
        self.last_ret = ret
        open_ = self.price
        close = open_ * math.exp(ret)
        wick_up, wick_down = np.abs(self.rng.normal(0.0, 0.5 * sigma, 2))
        high = max(open_, close) * math.exp(wick_up)
        low = min(open_, close) * math.exp(-wick_down)
        minute = (self.ts // 60_000) % 1440
        # busiest around 15:00 UTC (Europe/US overlap), quietest around 03:00 UTC
        intraday = 1.0 + 0.6 * (1 + math.cos(2 * math.pi * (minute - 900) / 1440)) / 2
        volume = float(self.rng.lognormal(0.0, 0.4)) * intraday * (1.0 + abs(ret) / sigma) * 5.0
        bar = Bar(self.symbol, self.ts, open_, high, low, close, volume,
                  int(self.rng.poisson(20 * intraday)) + 1)
        self.price = close
        self.ts += self.timeframe
        return bar

    def skip_until(self, ts: int) -> None:
        """Advance past ``ts`` (a restart resuming where the store ends; same seed, same bars)."""
        while self.ts <= ts:
            self.step()

    def frame(self, n: int) -> pl.DataFrame:
        rows = [self.step() for _ in range(n)]
        return pl.DataFrame(
            {c: [getattr(b, c) for b in rows] for c in (*OHLCV, "trades")},
            schema={"ts": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
                    "close": pl.Float64, "volume": pl.Float64, "trades": pl.Int64},
        )
