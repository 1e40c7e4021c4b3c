"""`bdt train [--symbol S]`: fit a model set on one symbol's bars from the market-data store
and promote it.

On a first run of the embedded default the store is empty; then the sample market's past
(the bars before the replayed part of the same seeded path) is stored first and trained on —
so the replayed sample is never in the training set (no look-ahead). That synthetic
pre-history goes only into an *empty* store and only for the sample's own symbol: a store
holding a user's data (``bdt data import``) is never given synthetic bars; too few bars of the
symbol asked for is a TrainingError with the figures. The result and the version's metadata
say whether the bars are synthetic.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from shared.bus.client import BusClient, BusError
from shared.config import Config
from shared.market.bars import timeframe_ms, utc
from shared.market.files import clean_bars, read_ohlcv
from shared.market.sample import ensure_sample_data, sample_paths
from shared.models.registry import ModelRegistry
from shared.storage.bar_store import BarStore, open_store

log = logging.getLogger("bdt.train")

# Seed 000 §3.2: one thread for BLAS/OpenMP, so training never takes more than its core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


class TrainingError(RuntimeError):
    """Not enough data, or data that cannot be trained on; the message says which."""


def uses_sample_market(cfg: Config) -> bool:
    """The embedded default: the bot's market is the synthetic sample (no replay file)."""
    feed = cfg.get("market.feed")
    return feed == "synthetic" or (feed == "replay" and not cfg.get("market.replay_path"))


def is_sample_symbol(cfg: Config, symbol: str) -> bool:
    """``symbol`` is the sample market's: the embedded default, and the bot's symbol (the
    first of market.symbols, the one it replays the sample for)."""
    return uses_sample_market(cfg) and symbol == cfg.get("market.symbols")[0]


def from_sample(cfg: Config, symbol: str, bars: pl.DataFrame) -> bool:
    """Some of ``bars`` may be the sample market's (synthetic): ``symbol`` is the sample's,
    its files exist (training or the feed made them) and ``bars`` overlap its time span."""
    past, replay = sample_paths(cfg, symbol)
    if bars.is_empty() or not is_sample_symbol(cfg, symbol) or not past.exists():
        return False
    first = pl.scan_parquet(past).select(pl.col("ts").min()).collect().item()
    last = pl.scan_parquet(replay if replay.exists() else past) \
        .select(pl.col("ts").max()).collect().item()
    return int(bars["ts"][0]) <= last and int(bars["ts"][-1]) >= first


def store_sample_past(cfg: Config, store: BarStore, symbol: str) -> int:
    """First run on the embedded default: the sample market's past goes into the store, as
    the history a real deployment would have collected."""
    ensure_sample_data(cfg, symbol)
    return store.insert_frame(symbol, read_ohlcv(sample_paths(cfg, symbol)[0]))


def store_replay_head(cfg: Config, store: BarStore, symbol: str) -> int:
    """First run on a user's replay file with an empty store: its first
    ``market.replay_train_fraction`` goes into the store, as history to train on; the bot
    then replays what follows it (it resumes after the store's last bar)."""
    timeframe = timeframe_ms(cfg.get("market.timeframe"))
    bars, _ = clean_bars(read_ohlcv(Path(cfg.get("market.replay_path"))), timeframe)
    head = bars.head(int(bars.height * cfg.get("market.replay_train_fraction")))
    return store.insert_frame(symbol, head)


@dataclass
class TrainingData:
    """The bars to train on and what they are."""

    bars: pl.DataFrame
    symbol: str
    synthetic: bool         # the sample market's (synthetic) bars, not a real market's
    stored_now: int         # bars this run put into the store first (sample past, replay head)
    source: str


def training_bars(cfg: Config, symbol: str, start: int | None = None,
                  end: int | None = None) -> TrainingData:
    """The newest ``model.train_bars`` stored bars of ``symbol`` (in [start, end) when given).

    With fewer than ``model.min_train_bars`` and no window, a first run fills the store: on
    the embedded default (the sample market's symbol) with the sample's synthetic past — only
    into an empty store, never beside a user's data; on a replay file with its head. Still too
    few: TrainingError with the figures."""
    want, minimum = cfg.get("model.train_bars"), cfg.get("model.min_train_bars")
    stored_now = 0
    store = open_store(cfg)
    try:
        bars = store.collect(symbol, start, end, then=lambda lazy: lazy.tail(want))
        first_run = bars.height < minimum and start is None and end is None
        bots = symbol == cfg.get("market.symbols")[0]
        empty = not store.symbols()
        if first_run and is_sample_symbol(cfg, symbol) and empty:
            stored_now = store_sample_past(cfg, store, symbol)
            log.info("stored %d bars of the sample market's past", stored_now)
        elif first_run and bots and cfg.get("market.feed") == "replay" \
                and not uses_sample_market(cfg):
            stored_now = store_replay_head(cfg, store, symbol)
            log.info("stored the first %d bars of %s to train on; the rest is replayed",
                     stored_now, cfg.get("market.replay_path"))
        if stored_now:
            bars = store.collect(symbol, then=lambda lazy: lazy.tail(want))
    finally:
        store.close()
    if bars.height < minimum:
        where = "in that window" if start is not None or end is not None else "stored"
        hint = " (synthetic sample pre-history goes only into an empty store)" \
            if first_run and is_sample_symbol(cfg, symbol) and not empty else ""
        raise TrainingError(f"{symbol}: {bars.height} bars {where}, {minimum} needed "
                            f"(model.min_train_bars){hint}: import or download more "
                            f"(bdt data import|download --symbol {symbol}) or lower the setting")
    synthetic = from_sample(cfg, symbol, bars)
    source = f"store: {symbol} {utc(bars['ts'][0])} → {utc(bars['ts'][-1])} " \
        f"({bars.height:,} bars)"
    if synthetic:
        source += "; synthetic: the embedded sample market's"
    return TrainingData(bars, symbol, synthetic, stored_now, source)


def train(cfg: Config, start: int | None = None, end: int | None = None,
          if_missing: bool = False, symbol: str | None = None) -> dict[str, Any]:
    """Train a model set on ``symbol``'s stored bars (default: the first of market.symbols),
    register and promote it, and tell a running predictor. With ``if_missing``, nothing when
    a version is promoted already. TrainingError when the data cannot be trained on.

    The result (and the version's metadata) says which symbol, whether the bars are the
    synthetic sample market's (``synthetic``) and how many bars this run stored first
    (``stored_now``)."""
    registry = ModelRegistry(cfg.model_dir)
    if if_missing and registry.current() is not None:
        return {"version": registry.current(), "trained": False}
    from shared.models.fitting import train_model_set

    symbol = symbol or cfg.get("market.symbols")[0]
    data = training_bars(cfg, symbol, start, end)
    try:
        model_set, report = train_model_set(
            data.bars, horizon=cfg.get("model.horizon_bars"),
            timeframe_ms=timeframe_ms(cfg.get("market.timeframe")),
            max_gap_bars=cfg.get("model.max_gap_bars"))
    except ValueError as exc:            # e.g. too few usable rows between the gaps
        raise TrainingError(f"{symbol}: {exc}") from None
    about = {"source": data.source, "symbol": symbol, "synthetic": data.synthetic,
             "stored_now": data.stored_now}
    version = registry.register(model_set, {**report, **about})
    registry.promote(version)
    try:
        with BusClient("predictor", cfg, timeout_ms=3000, retries=0) as predictor:
            predictor.call("reload", version=version)
    except BusError:
        pass  # not running: it loads the promoted version when it starts
    return {"version": version, "trained": True, **about,
            "metrics": report.get("metrics", {})}
