"""OHLCV files: CSV or Parquet read into a frame with epoch-ms ``ts`` and float prices."""

from __future__ import annotations

from pathlib import Path

import polars as pl

OHLCV = ("ts", "open", "high", "low", "close", "volume")


class FeedError(RuntimeError):
    """A feed that cannot deliver: unreadable file, missing column, unknown exchange."""


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
