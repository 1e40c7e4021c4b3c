"""Batched inference for a backtest chunk: the live predictor's numbers for many bars at once.

Features come from ``batch_features`` (held equal to the live incremental features by
tests/test_features.py, gaps included), expected return from the same Ridge arrays, p_up from
the same LightGBM booster on a matrix (one thread), and volatility from ``VolatilityTrack`` —
the GARCH state carried bar by bar exactly as the predictor carries it, long gaps included.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from shared.models.features import FEATURES, batch_features, missing_bars
from shared.models.model_set import ModelSet, VolatilityTrack


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
        er[complete] = (rows - r.mean) / r.scale @ r.coef + r.intercept
        p_up[complete] = model.booster.predict(rows, num_threads=1)
    return er, p_up, complete


class VolatilityFeed:
    """``VolatilityTrack`` driven by closes: a long gap cuts it, as in the predictor."""

    def __init__(self, track: VolatilityTrack, timeframe: int, max_gap_bars: int) -> None:
        self.track, self.timeframe, self.max_gap_bars = track, timeframe, max_gap_bars
        self.last_ts: int | None = None
        self.last_close: float | None = None

    def fold(self, ts: int, close: float) -> float | None:
        """Fold one bar; the volatility for a prediction on it (None: not warm)."""
        if self.last_ts is not None:
            if missing_bars(ts - self.last_ts, self.timeframe) > self.max_gap_bars:
                self.track.cut()
            elif self.last_close is not None:
                self.track.fold(math.log(close / self.last_close))
        self.last_ts, self.last_close = ts, close
        state = self.track.state
        return None if state is None else state.volatility
