"""`bdt train`: fit a model set on bars from the market-data store and promote it.

On a first run of the embedded default the store is empty; then the sample market's past
(the bars before the replayed part of the same seeded path) is stored first and trained on —
so the replayed sample is never in the training set (no look-ahead).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import polars as pl

from shared.bus.client import BusClient, BusError
from shared.config import Config
from shared.market.bars import Bar, timeframe_ms
from shared.market.files import clean_bars, read_ohlcv
from shared.market.sample import ensure_sample_data, sample_paths
from shared.models.registry import ModelRegistry
from shared.storage.bar_store import COLUMNS, BarStore, open_store

log = logging.getLogger("bdt.train")

# Seed 000 §3.2: one thread for BLAS/OpenMP, so training never takes more than its core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


class TrainingError(RuntimeError):
    """Not enough data, or data that cannot be trained on; the message says which."""


def uses_sample_market(cfg: Config) -> bool:
    feed = cfg.get("market.feed")
    return feed == "synthetic" or (feed == "replay" and not cfg.get("market.replay_path"))


def store_sample_past(cfg: Config, store: BarStore, symbol: str) -> int:
    """First run on the embedded default: the sample market's past goes into the store, as
    the history a real deployment would have collected."""
    ensure_sample_data(cfg, symbol)
    past = read_ohlcv(sample_paths(cfg, symbol)[0])
    return store.insert(Bar(symbol, *row) for row in past.select(COLUMNS).iter_rows())


def store_replay_head(cfg: Config, store: BarStore, symbol: str) -> int:
    """First run on a user's replay file with an empty store: its first
    ``market.replay_train_fraction`` goes into the store, as history to train on; the bot
    then replays what follows it (it resumes after the store's last bar)."""
    timeframe = timeframe_ms(cfg.get("market.timeframe"))
    bars, _ = clean_bars(read_ohlcv(Path(cfg.get("market.replay_path"))), timeframe)
    head = bars.head(int(bars.height * cfg.get("market.replay_train_fraction")))
    return store.insert_frame(symbol, head)


def training_bars(cfg: Config, start: int | None, end: int | None) -> tuple[pl.DataFrame, str]:
    symbol = cfg.get("market.symbols")[0]
    want, minimum = cfg.get("model.train_bars"), cfg.get("model.min_train_bars")
    store = open_store(cfg)
    try:
        bars = store.collect(symbol, start, end, then=lambda lazy: lazy.tail(want))
        first_run = bars.height < minimum and start is None and end is None
        if first_run and uses_sample_market(cfg):
            added = store_sample_past(cfg, store, symbol)
            log.info("stored %d bars of the sample market's past", added)
            bars = store.collect(symbol, then=lambda lazy: lazy.tail(want))
        elif first_run and cfg.get("market.feed") == "replay":
            added = store_replay_head(cfg, store, symbol)
            log.info("stored the first %d bars of %s to train on; the rest is replayed",
                     added, cfg.get("market.replay_path"))
            bars = store.collect(symbol, then=lambda lazy: lazy.tail(want))
    finally:
        store.close()
    if bars.height < minimum:
        where = "in that window" if start is not None or end is not None else "in the store"
        raise TrainingError(f"only {bars.height} {symbol} bars {where}; model.min_train_bars is "
                            f"{minimum}: let the feed run longer or lower the setting")
    return bars, f"store: {symbol} {bars['ts'][0]}..{bars['ts'][-1]} ({bars.height} bars)"


def train(cfg: Config, start: int | None = None, end: int | None = None,
          if_missing: bool = False) -> dict[str, Any]:
    registry = ModelRegistry(cfg.model_dir)
    if if_missing and registry.current() is not None:
        return {"version": registry.current(), "trained": False}
    from shared.models.fitting import train_model_set

    bars, source = training_bars(cfg, start, end)
    model_set, report = train_model_set(
        bars, horizon=cfg.get("model.horizon_bars"),
        timeframe_ms=timeframe_ms(cfg.get("market.timeframe")),
        max_gap_bars=cfg.get("model.max_gap_bars"))
    version = registry.register(model_set, {**report, "source": source})
    registry.promote(version)
    try:
        with BusClient("predictor", cfg, timeout_ms=3000, retries=0) as predictor:
            predictor.call("reload", version=version)
    except BusError:
        pass  # not running: it loads the promoted version when it starts
    return {"version": version, "trained": True, "source": source,
            "metrics": report.get("metrics", {})}
