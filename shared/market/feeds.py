"""Feeds of closed bars behind one interface: synthetic (seeded), replay (CSV/Parquet), and
live (ccxt.pro, in shared.market.feed_live). A feed is an iterator of closed ``Bar``s, paced.

A replayed or synthetic market goes on after the newest bar already in the market-data store
(the first run's training head, or wherever the last run stopped): ``open_feed`` gives the feed
``stored_until``, which reads the store when the feed starts — not whether history happens to
answer yet, so a bot started seconds before history never replays bars already stored.

**The registry.** Each feed kind (``market.feed``) has one opener, filed with
``@register_feed(kind)``; ``open_feed`` calls the configured kind's, and a kind nothing is
registered under is a ConfigError naming the choices, never a fallback. Config's
``market.feed`` choices are held to the registry by tests/test_registries.py."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import polars as pl

from shared.config import Config, ConfigError, exchange_options
from shared.market.bars import Bar, timeframe_ms
from shared.market.files import OHLCV, FeedError, clean_bars, read_ohlcv
from shared.market.sample import ensure_sample_data
from shared.market.synthetic import SyntheticMarket

log = logging.getLogger("bdt.feed")

__all__ = ["Feed", "FeedError", "Pacer", "ReplayFeed", "SyntheticFeed", "feed_kinds",
           "open_feed", "register_feed"]

StoredUntil = Callable[[], int | None]    # the store's newest bar ts, asked at the feed's start


def utc(ts: int) -> str:
    """Epoch ms as 'YYYY-MM-DD HH:MM UTC (ms)', for the log."""
    return dt.datetime.fromtimestamp(ts / 1000, dt.UTC).strftime(f"%Y-%m-%d %H:%M UTC ({ts})")


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
                 limit: int | None = None, pacer: Pacer | None = None,
                 stored_until: StoredUntil | None = None) -> None:
        self.market = SyntheticMarket(symbol, timeframe, seed)
        self.timeframe, self.limit = timeframe, limit
        self.pacer = pacer or Pacer(speed)
        self.stored_until = stored_until

    def bars(self) -> Iterator[Bar]:
        """The seeded path, from the first bar after the store's newest (same seed, same
        bars)."""
        last = self.stored_until() if self.stored_until else None
        if last is not None:
            self.market.skip_until(last)
            log.info("synthetic %s: starting after %s, the newest stored bar",
                     self.market.symbol, utc(last))
        n = 0
        while self.limit is None or n < self.limit:
            bar = self.market.step()
            self.pacer.wait(bar, self.timeframe)
            yield bar
            n += 1


class ReplayFeed:
    """Bars of an OHLCV file (any format of shared.market.files), in time order, after
    ``start_after`` and after what ``stored_until`` says when the replay starts. Rows the bar
    gate would refuse are dropped at open and logged by row."""

    name = "replay"

    def __init__(self, path: Path, symbol: str, timeframe: int, speed: float = 0.0,
                 start_after: int | None = None, pacer: Pacer | None = None,
                 stored_until: StoredUntil | None = None) -> None:
        self.path, self.symbol, self.timeframe = path, symbol, timeframe
        self.df, self.rejected = clean_bars(read_ohlcv(path), timeframe)
        if self.rejected:
            log.warning("replay %s: %d row(s) rejected, e.g. %s", path, len(self.rejected),
                        "; ".join(self.rejected[:3]))
        if start_after is not None:
            self.df = self.df.filter(pl.col("ts") > start_after)
        self.pacer = pacer or Pacer(speed)
        self.stored_until = stored_until

    def __len__(self) -> int:
        """Bars after ``start_after`` (the store is asked only when the replay starts)."""
        return self.df.height

    def _rest(self) -> pl.DataFrame:
        """The bars after the store's newest, asked now; logged."""
        last = self.stored_until() if self.stored_until else None
        if last is None:
            return self.df
        rest = self.df.filter(pl.col("ts") > last)
        if rest.is_empty():
            log.warning("replay %s: nothing to replay: the store already ends at %s, at or "
                        "after the file's last bar", self.path, utc(last))
        else:
            log.info("replay %s: starting after %s, the newest stored bar (%d bars to go)",
                     self.path, utc(last), rest.height)
        return rest

    def bars(self) -> Iterator[Bar]:
        df = self._rest()
        trades = df["trades"] if "trades" in df.columns else None
        for i, (ts, o, h, lo, c, v) in enumerate(df.select(OHLCV).iter_rows()):
            bar = Bar(self.symbol, ts, o, h, lo, c, v, int(trades[i]) if trades is not None else 0)
            self.pacer.wait(bar, self.timeframe)
            yield bar


FeedOpener = Callable[[Config, str, int, int | None, StoredUntil], Feed]
"""(cfg, symbol, timeframe ms, start_after, stored_until) → the feed of one kind."""
_KINDS: dict[str, FeedOpener] = {}


def register_feed(kind: str) -> Callable[[FeedOpener], FeedOpener]:
    """Decorator: the opener of ``market.feed = kind``. ValueError when another opener already
    has that kind."""
    def register(opener: FeedOpener) -> FeedOpener:
        taken = _KINDS.get(kind)
        if taken is not None and taken is not opener:
            raise ValueError(f"feed kind {kind!r} is already registered "
                             f"({taken.__module__}.{taken.__qualname__})")
        _KINDS[kind] = opener
        return opener
    return register


def feed_kinds() -> tuple[str, ...]:
    """The registered feed kinds, in registration order."""
    return tuple(_KINDS)


def feed_opener(kind: str) -> FeedOpener:
    """The opener registered for ``kind``; ConfigError naming the choices when there is none."""
    try:
        return _KINDS[kind]
    except KeyError:
        raise ConfigError(f"market.feed: expected one of {', '.join(_KINDS)}, "
                          f"got {kind!r}") from None


@register_feed("replay")
def _open_replay(cfg: Config, symbol: str, timeframe: int, start_after: int | None,
                 store_end: StoredUntil) -> Feed:
    """``market.replay_path``, or the sample market made at first use."""
    path = Path(cfg.get("market.replay_path") or ensure_sample_data(cfg, symbol))
    return ReplayFeed(path, symbol, timeframe, cfg.get("market.replay_speed"), start_after,
                      stored_until=store_end)


@register_feed("synthetic")
def _open_synthetic(cfg: Config, symbol: str, timeframe: int, start_after: int | None,
                    store_end: StoredUntil) -> Feed:
    """The seeded path of ``market.synthetic_seed`` (``start_after`` does not apply)."""
    return SyntheticFeed(symbol, timeframe, cfg.get("market.synthetic_seed"),
                         cfg.get("market.replay_speed"), stored_until=store_end)


@register_feed("live")
def _open_live(cfg: Config, symbol: str, timeframe: int, start_after: int | None,
               store_end: StoredUntil) -> Feed:
    """The exchange's WebSocket (ccxt.pro, the optional extra "live", imported only here)."""
    from shared.market.feed_live import LiveFeed

    return LiveFeed(cfg.get("market.exchange"), symbol, timeframe,
                    exchange_options=exchange_options(cfg))


def open_feed(cfg: Config, symbol: str, *, start_after: int | None = None,
              stored_until: StoredUntil | None = None) -> Feed:
    """The configured feed for one symbol. A replay feed starts after ``start_after``, and a
    replay or synthetic feed after what ``stored_until`` says when the feed starts: the
    caller's reading of where the market store ends (the bot's reads the store itself, not
    through history; this layer does not open the store). ConfigError naming the choices for
    a ``market.feed`` no opener is registered for."""
    timeframe = timeframe_ms(cfg.get("market.timeframe"))
    opener = feed_opener(cfg.get("market.feed"))
    return opener(cfg, symbol, timeframe, start_after, stored_until or (lambda: None))
