"""OHLCV files in the formats people have, read into one frame: ``ts`` (epoch ms, Int64) and
``open high low close volume`` (Float64), plus ``trades`` (Int64) when the file has it.

Formats, recognised by content, not only by name:
- CSV with a header: an exchange's kline export (``open_time,open,…``), freqtrade/backtrader
  style (``date,open,…``), anything with a time column and OHLCV columns under common names;
- CSV without a header: Binance's kline dump (open_time, o, h, l, c, v, close_time, …);
- Parquet with such columns;
- JSON: freqtrade's ``[[ts_ms, o, h, l, c, v], …]``, or a list of objects with named fields.

Times may be epoch seconds, milliseconds or microseconds, ISO text (with or without a zone;
none means UTC), or a datetime column. A file that cannot be read, or lacks a column, raises
``FeedError`` naming the file and what is missing; rows are not validated here (the bar gate
does that, in ``shared.market.importing`` and the replay feed).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

OHLCV = ("ts", "open", "high", "low", "close", "volume")
# accepted header names per column, lower-case, in order of preference
NAMES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "open_time", "opentime", "open time", "timestamp", "time", "date", "datetime",
           "t", "unix", "start"),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price"),
    "volume": ("volume", "v", "vol", "base_volume", "volume_base"),
    "trades": ("trades", "number_of_trades", "count", "n", "trade_count"),
}
# Binance's headerless kline CSV: the first 9 of its 12 columns
BINANCE_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                   "trades")


class FeedError(RuntimeError):
    """A feed or file that cannot deliver: unreadable file, missing column, unknown exchange."""


def _read_frame(path: Path) -> pl.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pl.read_parquet(path)
    if name.endswith(".json"):
        return _read_json(path)
    if name.endswith((".csv", ".txt", ".tsv")):
        sep = "\t" if name.endswith(".tsv") else ","
        first = path.open("r", encoding="utf-8", errors="replace").readline()
        cells = [c.strip().strip('"') for c in first.split(sep)]
        if cells and _number(cells[0]):          # no header: Binance's kline dump
            df = pl.read_csv(path, has_header=False, separator=sep, infer_schema_length=1000)
            names = list(BINANCE_COLUMNS[:min(df.width, len(BINANCE_COLUMNS))])
            return df.select(df.columns[:len(names)]).rename(dict(zip(df.columns, names,
                                                                      strict=False)))
        return pl.read_csv(path, separator=sep, infer_schema_length=10_000)
    raise FeedError(f"{path}: unknown file type; expected .csv, .tsv, .txt, .parquet or .json")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_json(path: Path) -> pl.DataFrame:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if not isinstance(data, list) or not data:
        raise FeedError(f"{path}: expected a JSON list of candles")
    if isinstance(data[0], list):               # freqtrade: [ts, o, h, l, c, v]
        if any(not isinstance(r, list) or len(r) < 6 for r in data):
            raise FeedError(f"{path}: every candle must be [ts, open, high, low, close, volume]")
        return pl.DataFrame([r[:6] for r in data], schema=list(OHLCV), orient="row",
                            infer_schema_length=None)
    if isinstance(data[0], dict):
        return pl.DataFrame(data, infer_schema_length=None)
    raise FeedError(f"{path}: expected a JSON list of lists or of objects")


def _find(df: pl.DataFrame, col: str) -> str | None:
    lower = {c.lower().strip(): c for c in df.columns}
    return next((lower[n] for n in NAMES[col] if n in lower), None)


def _epoch_ms(series: pl.Series, path: Path) -> pl.Series:
    """Times as epoch ms, whatever the file holds (see the module docstring)."""
    if series.dtype.is_temporal():
        if series.dtype == pl.Date:
            series = series.cast(pl.Datetime("ms"))
        return series.dt.epoch("ms")
    if series.dtype == pl.String:
        parsed = series.str.to_datetime(time_zone="UTC", strict=False)
        if parsed.null_count() > series.null_count():
            bad = series.filter(parsed.is_null() & series.is_not_null()).head(1).to_list()
            raise FeedError(f"{path}: time value {bad[0]!r} is neither a number nor an ISO "
                            "date/time")
        return parsed.dt.epoch("ms")
    if not series.dtype.is_numeric():
        raise FeedError(f"{path}: time column of type {series.dtype} is not a time")
    values = series.cast(pl.Float64)
    typical = values.drop_nulls().abs().median() or 0
    if typical < 1e11:          # seconds (until the year 5138)
        values = values * 1000
    elif typical > 1e14:        # microseconds
        values = values / 1000
    return values.round(0).cast(pl.Int64)


def read_ohlcv(path: Path) -> pl.DataFrame:
    """The file's rows in file order: ``ts`` (epoch ms), OHLCV as float, ``trades`` when
    present. A value that is empty or not a number reads as null (``clean_bars`` rejects its
    row, naming it). FeedError names the file and the problem: unreadable, unknown type, a
    missing column, times that are not times."""
    path = Path(path)
    try:
        raw = _read_frame(path)
    except FileNotFoundError:
        raise FeedError(f"{path}: no such file") from None
    except FeedError:
        raise
    except Exception as exc:  # polars and json raise many types for unreadable files
        raise FeedError(f"{path}: unreadable: {type(exc).__name__}: {exc}") from None
    found = {col: _find(raw, col) for col in (*OHLCV, "trades")}
    missing = [c for c in OHLCV if found[c] is None]
    if missing:
        wanted = "; ".join(f"{c}: one of {', '.join(NAMES[c])}" for c in missing)
        raise FeedError(f"{path}: missing column(s) {', '.join(missing)} ({wanted}); the file "
                        f"has {raw.columns}")
    try:
        out = pl.DataFrame({"ts": _epoch_ms(raw[found["ts"]], path),
                            **{c: raw[found[c]].cast(pl.Float64, strict=False)
                               for c in OHLCV[1:]}})
        if found["trades"] is not None:
            out = out.with_columns(raw[found["trades"]].cast(pl.Int64, strict=False)
                                   .alias("trades"))
    except FeedError:
        raise
    except Exception as exc:
        raise FeedError(f"{path}: unreadable values: {exc}") from None
    return out


def clean_bars(df: pl.DataFrame, timeframe: int) -> tuple[pl.DataFrame, list[str]]:
    """The rows that make valid bars, sorted by time, duplicates dropped; and why each other
    row was rejected ("row 17: high 99.0 < low 100.0"), rows counted from 1 in file order.
    The rules are the bar gate's (``shared.market.gate.bar_problem``), applied to a frame."""
    from shared.market.gate import frame_problems

    rows = df.with_row_index("row", offset=1)
    problems = frame_problems(rows, timeframe)
    bad = rows.with_columns(problems.alias("problem")).filter(pl.col("problem").is_not_null())
    good = rows.filter(problems.is_null()).sort("row").unique("ts", keep="first") \
        .sort("ts")
    dupes = rows.filter(problems.is_null()).height - good.height
    reasons = [f"row {r}: {p}" for r, p in bad.select("row", "problem").iter_rows()]
    if dupes:
        reasons.append(f"{dupes} duplicate row(s) (same time as an earlier row) dropped")
    return good.drop("row"), reasons
