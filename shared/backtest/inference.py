"""Batched inference for a backtest chunk: the live predictor's numbers for many bars at once.

Features come from ``batch_features`` (held equal to the live incremental features by
tests/test_features.py, gaps included), expected return from the same Ridge arrays, p_up from
the same LightGBM booster on a matrix (one thread), and volatility from ``VolatilityTrack`` —
the GARCH state carried bar by bar exactly as the predictor carries it, long gaps included.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from shared.models.features import FEATURES, batch_features
from shared.models.model_set import ModelSet


def predict_frame(model: ModelSet, frame: pl.DataFrame, timeframe: int,
                  max_gap_bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every row of ``frame`` (bars in time order; the first rows are context):
    (expected return, p_up, complete) — ``complete`` False where the features are still
    warming up; er and p_up are NaN there."""
    x = batch_features(frame, timeframe, max_gap_bars).select(FEATURES).to_numpy()
    complete = ~np.isnan(x).any(axis=1)
    er = np.full(frame.height, np.nan)
    p_up = np.full(frame.height, np.nan)
    if complete.any():
        rows = np.ascontiguousarray(x[complete])
        r = model.ridge
        er[complete] = r.predict_rows(rows)
        p_up[complete] = model.booster.predict(rows, num_threads=1)
    return er, p_up, complete
