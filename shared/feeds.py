"""Feeds of closed bars behind one interface: synthetic (seeded), replay (CSV/Parquet), and
live (ccxt.pro, in shared.feed_live). A feed is an iterator of closed ``Bar``s, paced."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from shared.config import Config
from shared.market import Bar, timeframe_ms

OHLCV = ("ts", "open", "high", "low", "close", "volume")


class Feed(Protocol):
    name: str

    def bars(self) -> Iterator[Bar]: ...


class FeedError(RuntimeError):
    """A feed that cannot deliver: unreadable file, missing column, unknown exchange."""


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


def read_ohlcv(path: Path) -> pl.DataFrame:
    """OHLCV from CSV or Parquet; ``ts`` as epoch ms or a datetime. Errors name file and column."""
    try:
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
        elif path.suffix == ".csv":
            df = pl.read_csv(path, try_parse_dates=True)
        else:
            raise FeedError(f"{path}: expected a .csv or .parquet file")
    except FileNotFoundError:
        raise FeedError(f"{path}: no such file") from None
    except FeedError:
        raise
    except Exception as exc:  # polars raises many types for unreadable files
        raise FeedError(f"{path}: unreadable: {type(exc).__name__}: {exc}") from None
    missing = [c for c in OHLCV if c not in df.columns]
    if missing:
        raise FeedError(f"{path}: missing column(s) {', '.join(missing)}; have {df.columns}")
    if df["ts"].dtype.is_temporal():
        df = df.with_columns(pl.col("ts").dt.epoch("ms"))
    try:
        return df.with_columns(pl.col("ts").cast(pl.Int64),
                               *(pl.col(c).cast(pl.Float64) for c in OHLCV[1:]))
    except Exception as exc:
        raise FeedError(f"{path}: non-numeric OHLCV values: {exc}") from None


class ReplayFeed:
    name = "replay"

    def __init__(self, path: Path, symbol: str, timeframe: int, speed: float = 0.0,
                 start_after: int | None = None, pacer: Pacer | None = None) -> None:
        self.path, self.symbol, self.timeframe = path, symbol, timeframe
        self.df = read_ohlcv(path)
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


def symbol_slug(symbol: str) -> str:
    return symbol.replace("/", "").replace(":", "_")


def sample_paths(cfg: Config, symbol: str) -> tuple[Path, Path]:
    """The embedded default's market, one seeded path in two parts: its *past*
    (``model.train_bars`` bars, stored and trained on at first run) and the *replay* that
    follows (``market.sample_bars`` bars). One path: no seam, and no replayed bar was ever
    trained on."""
    base = f"{symbol_slug(symbol)}_{cfg.get('market.timeframe')}_seed" \
        f"{cfg.get('market.synthetic_seed')}"
    folder = cfg.var_dir / "data" / "sample"
    return (folder / f"{base}_past{cfg.get('model.train_bars')}.parquet",
            folder / f"{base}_replay{cfg.get('market.sample_bars')}.parquet")


def ensure_sample_data(cfg: Config, symbol: str) -> Path:
    """Generate the sample market once (both parts, written atomically); the replay part."""
    past, replay = sample_paths(cfg, symbol)
    if not (past.exists() and replay.exists()):
        past.parent.mkdir(parents=True, exist_ok=True)
        n_past = cfg.get("model.train_bars")
        market = SyntheticMarket(symbol, timeframe_ms(cfg.get("market.timeframe")),
                                 cfg.get("market.synthetic_seed"))
        frame = market.frame(n_past + cfg.get("market.sample_bars"))
        for path, part in ((past, frame.head(n_past)), (replay, frame.slice(n_past))):
            tmp = path.with_suffix(".tmp")
            part.write_parquet(tmp)
            os.replace(tmp, path)
    return replay


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
    from shared.feed_live import LiveFeed  # optional extra "live"

    return LiveFeed(cfg.get("market.exchange"), symbol, timeframe)
