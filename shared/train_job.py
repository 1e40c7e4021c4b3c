"""`bdt train`: fit a model set on bars from the market-data store and promote it.

On a first run the store is empty; then the models are trained on *synthetic pre-history*:
bars from the same seeded market process with another seed, ending before the sample data
begins — so the replayed sample is never in the training set (no look-ahead).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import polars as pl

from shared.bus import BusClient, BusError
from shared.config import Config
from shared.feeds import SyntheticMarket
from shared.market import timeframe_ms
from shared.registry import ModelRegistry
from shared.store import BarStore

log = logging.getLogger("bdt.train")

# Seed 000 §3.2: one thread for BLAS/OpenMP, so training never takes more than its core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


class TrainingError(RuntimeError):
    """Not enough data, or data that cannot be trained on; the message says which."""


def training_bars(cfg: Config, start: int | None, end: int | None) -> tuple[pl.DataFrame, str]:
    symbol = cfg.get("market.symbols")[0]
    want, minimum = cfg.get("model.train_bars"), cfg.get("model.min_train_bars")
    store = BarStore(cfg.var_dir / "data" / "market", cfg.get("history.db_synchronous"))
    try:
        bars = store.scan(symbol, start, end).collect().tail(want)
    finally:
        store.close()
    if bars.height >= minimum:
        return bars, f"store: {symbol} {bars['ts'][0]}..{bars['ts'][-1]}"
    if start is not None or end is not None:
        raise TrainingError(f"only {bars.height} {symbol} bars in the store in that window; "
                            f"model.min_train_bars is {minimum}")
    tf = timeframe_ms(cfg.get("market.timeframe"))
    market = SyntheticMarket(symbol, tf, cfg.get("market.synthetic_seed") + 1,
                             start_ts=1_700_000_040_000 - want * tf)
    return market.frame(want), f"synthetic pre-history (seed {market_seed(cfg)}), first run"


def market_seed(cfg: Config) -> int:
    return cfg.get("market.synthetic_seed") + 1


def train(cfg: Config, start: int | None = None, end: int | None = None,
          if_missing: bool = False) -> dict[str, Any]:
    registry = ModelRegistry(cfg.model_dir)
    if if_missing and registry.current() is not None:
        return {"version": registry.current(), "trained": False}
    from shared.training import train_model_set  # heavy imports only when training

    bars, source = training_bars(cfg, start, end)
    model_set, report = train_model_set(bars, horizon=cfg.get("model.horizon_bars"))
    version = registry.register(model_set, {**report, "source": source})
    registry.promote(version)
    try:
        with BusClient("predictor", cfg, timeout_ms=3000, retries=0) as predictor:
            predictor.call("reload", version=version)
    except BusError:
        pass  # not running: it loads the promoted version when it starts
    return {"version": version, "trained": True, "source": source,
            "metrics": report.get("metrics", {})}
