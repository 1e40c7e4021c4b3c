"""Feeds of closed bars behind one interface: synthetic (seeded), replay (CSV/Parquet), and
live (ccxt.pro, in shared.market.feed_live). A feed is an iterator of closed ``Bar``s, paced."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import polars as pl

from shared.config import Config, exchange_options
from shared.market.bars import Bar, timeframe_ms
from shared.market.files import OHLCV, FeedError, clean_bars, read_ohlcv
from shared.market.sample import ensure_sample_data
from shared.market.synthetic import SyntheticMarket

log = logging.getLogger("bdt.feed")

__all__ = ["Feed", "FeedError", "Pacer", "ReplayFeed", "SyntheticFeed", "open_feed"]


class Feed(Protocol):
    name: str

    def bars(self) -> Iterator[Bar]: ...


class Pacer:
    """Sleep so bar k is released when its close time comes, scaled by ``speed`` (0 = no wait)."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.speed, self.clock, self.sleep = speed, clock, sleep
        self._t0: float | None = None
        self._ts0 = 0

    def wait(self, bar: Bar, timeframe: int) -> None:
        if self.speed <= 0:
            return
        if self._t0 is None:
            self._t0, self._ts0 = self.clock(), bar.ts
        due = self._t0 + (bar.ts - self._ts0 + timeframe) / 1000 / self.speed
        delay = due - self.clock()
        if delay > 0:
            self.sleep(delay)


class SyntheticFeed:
    name = "synthetic"

    def __init__(self, symbol: str, timeframe: int, seed: int, speed: float = 0.0,
                 limit: int | None = None, pacer: Pacer | None = None) -> None:
        self.market = SyntheticMarket(symbol, timeframe, seed)
        self.timeframe, self.limit = timeframe, limit
        self.pacer = pacer or Pacer(speed)

    def bars(self) -> Iterator[Bar]:
        n = 0
        while self.limit is None or n < self.limit:
            bar = self.market.step()
            self.pacer.wait(bar, self.timeframe)
            yield bar
            n += 1


class ReplayFeed:
    """Bars of an OHLCV file (any format of shared.market.files), in time order, after
    ``start_after``. Rows the bar gate would refuse are dropped at open and logged by row."""

    name = "replay"

    def __init__(self, path: Path, symbol: str, timeframe: int, speed: float = 0.0,
                 start_after: int | None = None, pacer: Pacer | None = None) -> None:
        self.path, self.symbol, self.timeframe = path, symbol, timeframe
        self.df, self.rejected = clean_bars(read_ohlcv(path), timeframe)
        if self.rejected:
            log.warning("replay %s: %d row(s) rejected, e.g. %s", path, len(self.rejected),
                        "; ".join(self.rejected[:3]))
        if start_after is not None:
            self.df = self.df.filter(pl.col("ts") > start_after)
        self.pacer = pacer or Pacer(speed)

    def __len__(self) -> int:
        return self.df.height

    def bars(self) -> Iterator[Bar]:
        trades = self.df["trades"] if "trades" in self.df.columns else None
        for i, (ts, o, h, lo, c, v) in enumerate(self.df.select(OHLCV).iter_rows()):
            bar = Bar(self.symbol, ts, o, h, lo, c, v, int(trades[i]) if trades is not None else 0)
            self.pacer.wait(bar, self.timeframe)
            yield bar


def open_feed(cfg: Config, symbol: str, *, start_after: int | None = None) -> Feed:
    """The configured feed for one symbol."""
    timeframe = timeframe_ms(cfg.get("market.timeframe"))
    kind = cfg.get("market.feed")
    speed = cfg.get("market.replay_speed")
    if kind == "synthetic":
        return SyntheticFeed(symbol, timeframe, cfg.get("market.synthetic_seed"), speed)
    if kind == "replay":
        path = Path(cfg.get("market.replay_path") or ensure_sample_data(cfg, symbol))
        return ReplayFeed(path, symbol, timeframe, speed, start_after)
    from shared.market.feed_live import LiveFeed  # optional extra "live"

    return LiveFeed(cfg.get("market.exchange"), symbol, timeframe,
                    exchange_options=exchange_options(cfg))
