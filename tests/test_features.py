"""One feature definition, two executions: batch (polars) and live (bar by bar) must agree."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from shared.market.bars import Bar
from shared.market.synthetic import SyntheticMarket
from shared.models.features import (
    FEATURES,
    WARMUP_BARS,
    IncrementalFeatures,
    batch_features,
    forward_return_expr,
)


def synthetic(n: int, seed: int = 3) -> pl.DataFrame:
    return SyntheticMarket("BTC/USDT", 60_000, seed).frame(n)


def live(df: pl.DataFrame) -> list[np.ndarray | None]:
    inc = IncrementalFeatures()
    return [inc.update(Bar("BTC/USDT", **row)) for row in df.iter_rows(named=True)]


def assert_parity(df: pl.DataFrame) -> None:
    batch = batch_features(df).select(FEATURES).to_numpy()
    vectors = live(df)
    assert all(v is None for v in vectors[:WARMUP_BARS])
    rows = np.array(vectors[WARMUP_BARS:])
    assert rows.shape == (df.height - WARMUP_BARS, len(FEATURES))
    for j, name in enumerate(FEATURES):
        assert np.allclose(rows[:, j], batch[WARMUP_BARS:, j], rtol=1e-9, atol=1e-12), name


def test_live_matches_batch_on_3000_bars() -> None:
    assert_parity(synthetic(3000))


def test_live_matches_batch_on_flat_and_empty_bars() -> None:
    """The guarded branches (high == low, zero volume) agree too."""
    df = synthetic(400).with_row_index("i")
    flat = pl.col("i").is_between(150, 160)
    df = df.with_columns(
        pl.when(flat).then(pl.col("close")).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low"))
    df = df.with_columns(pl.when(flat).then(0.0).otherwise(pl.col("volume")).alias("volume"))
    assert_parity(df.drop("i"))


def test_warm_up() -> None:
    df = synthetic(WARMUP_BARS + 5)
    batch = batch_features(df).select(FEATURES)
    assert all(batch.row(i).count(None) > 0 for i in range(WARMUP_BARS))
    assert batch.row(WARMUP_BARS).count(None) == 0
    vectors = live(df)
    assert vectors[WARMUP_BARS - 1] is None
    assert vectors[WARMUP_BARS] is not None


def test_feature_order_and_values_by_name() -> None:
    df = synthetic(200)
    assert batch_features(df).columns == [*df.columns, *FEATURES]
    assert len(set(FEATURES)) == len(FEATURES)
    t = 150
    x = live(df)[t]
    assert x is not None and x.dtype == np.float64 and x.shape == (len(FEATURES),)
    close, ts = df["close"], df["ts"][t]
    angle = 2 * math.pi * ((ts // 60_000) % 1440) / 1440
    expected = {
        "ret_1": math.log(close[t] / close[t - 1]),
        "ret_15": math.log(close[t] / close[t - 15]),
        "prev_ret_1": math.log(close[t - 1] / close[t - 2]),
        "vol_15": float(np.std(np.diff(np.log(close.to_numpy()[t - 15:t + 1])), ddof=1)),
        "tod_sin": math.sin(angle),
        "tod_cos": math.cos(angle),
    }
    for name, value in expected.items():
        assert x[FEATURES.index(name)] == pytest.approx(value, rel=1e-9), name


def test_forward_return() -> None:
    df = synthetic(50)
    fwd = df.select(forward_return_expr(3)).to_series()
    assert fwd.null_count() == 3 and fwd[-3:].is_null().all()
    assert fwd[10] == pytest.approx(math.log(df["close"][13] / df["close"][10]))
    with pytest.raises(ValueError):
        forward_return_expr(0)


def with_gaps(df: pl.DataFrame, gaps: dict[int, int]) -> pl.DataFrame:
    """``df`` with ``gaps[i]`` bars missing after row i: later rows' times move on."""
    shift = np.zeros(df.height, dtype=np.int64)
    for start, missing in gaps.items():
        shift[start + 1:] += missing * 60_000
    return df.with_columns(pl.col("ts") + pl.Series(shift))


def test_live_matches_batch_across_gaps_and_a_long_gap_starts_a_new_warm_up() -> None:
    """Issue 12 case 9: a replay starting 39 h after the store's end made ret_1 a 5.5× move
    and the bot bought on it. A gap of more than MAX_GAP_BARS missing bars cuts the series in
    both executions: nothing is computed across it, features warm up again after it."""
    df = with_gaps(synthetic(1200), {300: 3, 500: 2340, 900: 6})  # short, 39 h, just too long
    batch = batch_features(df).select(FEATURES)
    vectors = live(df)
    cuts = [int(i) for i in np.flatnonzero(np.diff(df["ts"].to_numpy()) > 6 * 60_000)]
    assert len(cuts) == 2                               # 2340 and 6 missing; 3 is bridged
    for cut in cuts:
        after = cut + 1
        assert all(v is None for v in vectors[after:after + WARMUP_BARS])
        assert all(batch.row(i).count(None) > 0 for i in range(after, after + WARMUP_BARS))
        assert vectors[after + WARMUP_BARS] is not None
    for i, v in enumerate(vectors):
        if v is None:
            assert batch.row(i).count(None) > 0, i
        else:
            assert np.allclose(v, np.array(batch.row(i), dtype=float), rtol=1e-9,
                               atol=1e-12), i
    inc = IncrementalFeatures()
    gaps = []
    for row in df.iter_rows(named=True):
        inc.update(Bar("BTC/USDT", **row))
        if inc.last_gap is not None:
            gaps.append(inc.last_gap)
    assert gaps == [2340, 6]
