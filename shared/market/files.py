"""OHLCV files in the formats people have, read into one frame: ``ts`` (epoch ms, Int64) and
``open high low close volume`` (Float64), plus ``trades`` (Int64) when the file has it.

Formats, recognised by content, not only by name:
- CSV with a header: an exchange's kline export (``open_time,open,…``), freqtrade/backtrader
  style (``date,open,…``), anything with a time column and OHLCV columns under common names;
- CSV without a header: Binance's kline dump (open_time, o, h, l, c, v, close_time, …);
- Parquet with such columns;
- JSON: freqtrade's ``[[ts_ms, o, h, l, c, v], …]``, or a list of objects with named fields.

Times may be epoch seconds, milliseconds or microseconds (told apart by size), year-first text
(ISO 8601, with or without a zone; none means UTC), or a datetime column. Day/month text
(``01/02/2024 00:00``) is read only when its order is certain: some row has a field above 12
(``13/01/2024`` is day first, ``01/13/2024`` month first); when every row could be either, the
file is refused, naming the column, a row and the flag that settles it (``--date-format``, a
``strftime`` format, which is then used for every row). Two-digit years are refused alike.

Rows count from 1 after the header, in file order. A row that is not a candle — a blank line, a
repeated header, a summary or footer line: no number among open/high/low/close and no time — is
skipped and named (``Candles.skipped``); a candle row whose time cannot be read is kept with a
null ``ts`` and its ``problem`` ("time 'yesterday' is not a date/time"), for ``clean_bars`` to
reject by name. A file that cannot be read, lacks a column, or whose times none read, raises
``FeedError`` naming the file and what is wrong; values are checked by the bar gate's rules in
``clean_bars`` (used by ``shared.storage.importing`` and the replay feed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
        # every cell as text: a repeated header or a footer line cannot turn a column's type
        if cells and _number(cells[0]):          # no header: Binance's kline dump
            df = pl.read_csv(path, has_header=False, separator=sep, infer_schema=False)
            names = list(BINANCE_COLUMNS[:min(df.width, len(BINANCE_COLUMNS))])
            return df.select(df.columns[:len(names)]).rename(dict(zip(df.columns, names,
                                                                      strict=False)))
        return pl.read_csv(path, separator=sep, infer_schema=False)
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


@dataclass
class Candles:
    """A file read: ``frame`` holds its candle rows — ``row`` (from 1 after the header),
    ``ts`` (epoch ms, null where unreadable), OHLCV as float, ``trades`` when the file has it,
    ``problem`` (why a row's time is unreadable, else null); ``skipped`` names the rows that
    are not candles ("row 9: blank line"); ``times`` says how the times were read ("" when
    the file has none)."""

    frame: pl.DataFrame
    skipped: list[str]
    times: str


# day/month/year text: day, separator, month, separator, year, the rest (the time of day)
_DAY_MONTH = r"^(\d{1,2})([/.-])(\d{1,2})([/.-])(\d{4}|\d{2})(\D.*)?$"
_TIME_OF_DAY = r"^(\s+|T)\d{1,2}:\d{2}(:\d{2})?(\.\d+)?$"


def _numbers(series: pl.Series) -> pl.Series:
    """Values as Float64; what is empty or not a number is null."""
    if series.dtype == pl.String:
        return series.str.strip_chars().cast(pl.Float64, strict=False)
    return series.cast(pl.Float64, strict=False)


def _epoch(values: pl.Series) -> tuple[pl.Series, str]:
    """Epoch numbers as ms, their unit told by size (seconds until the year 5138)."""
    typical = values.drop_nulls().abs().median() or 0
    if typical < 1e11:
        return (values * 1000).round(0).cast(pl.Int64), "epoch seconds"
    if typical > 1e14:
        return (values / 1000).round(0).cast(pl.Int64), "epoch microseconds"
    return values.round(0).cast(pl.Int64), "epoch milliseconds"


def _suggest(example: str, month_first: bool) -> str:
    """A ``--date-format`` for a day/month value like ``example``, in the order asked."""
    parts = pl.Series([example]).str.extract_groups(_DAY_MONTH).struct.unnest().row(0)
    sep1, sep2, year, rest = parts[1], parts[3], parts[4], parts[5] or ""
    date = ("%m{}%d{}" if month_first else "%d{}%m{}").format(sep1, sep2) + \
        ("%Y" if len(year) == 4 else "%y")
    clock = pl.Series([rest]).str.extract_groups(_TIME_OF_DAY).struct.unnest().row(0)
    if not rest:
        return date
    if clock[0] is None:
        return date + " …"                        # a time of day this cannot spell
    return (date + ("T" if clock[0] == "T" else " ") + "%H:%M" + (":%S" if clock[1] else "")
            + (".%f" if clock[2] else ""))


def _day_month(text: pl.Series, path: Path, column: str) -> tuple[pl.Series, str]:
    """Day/month/year text as epoch ms, when a row settles the order (module docstring)."""
    parts = text.str.extract_groups(_DAY_MONTH).struct.unnest() \
        .rename({"1": "first", "3": "second", "5": "year", "6": "rest"})
    first, second = parts["first"].cast(pl.Int32), parts["second"].cast(pl.Int32)
    at = int(first.is_not_null().arg_true()[0])
    example = text[at]

    def flag() -> str:
        return (f"give the order with --date-format, e.g. --date-format "
                f"'{_suggest(example, True)}' (month first, US) or "
                f"'{_suggest(example, False)}' (day first)")
    if (parts["year"].str.len_chars() == 2).any():
        raise FeedError(f"{path}: column {column!r} has two-digit years ({example!r}, row "
                        f"{at + 1}): which field is the year cannot be told; {flag()}")
    day_rows, month_rows = (first > 12).arg_true(), (second > 12).arg_true()
    if len(day_rows) and len(month_rows):
        i, j = int(day_rows[0]), int(month_rows[0])
        raise FeedError(f"{path}: column {column!r} has dates of both orders: {text[i]!r} "
                        f"(row {i + 1}) can only be day first, {text[j]!r} (row {j + 1}) only "
                        f"month first; {flag()}")
    if not len(day_rows) and not len(month_rows):
        raise FeedError(f"{path}: column {column!r} has dates such as {example!r} (row "
                        f"{at + 1}) whose day and month cannot be told apart: no row has a "
                        f"first or second field above 12; {flag()}")
    day_first = bool(len(day_rows))
    day, month = ("first", "second") if day_first else ("second", "first")
    iso = parts.select(pl.concat_str([pl.col("year"), pl.lit("-"), pl.col(month).str.zfill(2),
                                      pl.lit("-"), pl.col(day).str.zfill(2),
                                      pl.col("rest").fill_null("")])
                       ).to_series()
    settles = int((day_rows if day_first else month_rows)[0])
    order = "day/month/year, day first" if day_first else "month/day/year, month first"
    how = f"{order} ({text[settles]!r}, row {settles + 1}, has a day above 12)"
    return iso.str.to_datetime(time_zone="UTC", strict=False).dt.epoch("ms"), how


def _times(series: pl.Series, path: Path, column: str, date_format: str | None
           ) -> tuple[pl.Series, str]:
    """The time column as epoch ms (null where a value is not a time), and how it was read
    (see the module docstring)."""
    if series.dtype.is_temporal() and date_format is None:
        if series.dtype == pl.Date:
            series = series.cast(pl.Datetime("ms"))
        return series.dt.epoch("ms"), "a date/time column"
    if series.dtype.is_numeric() and date_format is None:
        return _epoch(series.cast(pl.Float64))
    text = series.cast(pl.String).str.strip_chars()
    if date_format is not None:
        try:
            parsed = text.str.strptime(pl.Datetime("ms"), date_format, strict=False)
        except pl.exceptions.PolarsError as exc:
            raise FeedError(f"{path}: --date-format {date_format!r}: {exc}") from None
        if parsed.dtype.time_zone is None:         # type: ignore[union-attr]
            parsed = parsed.dt.replace_time_zone("UTC")
        return parsed.dt.epoch("ms"), f"--date-format {date_format!r}"
    # a value without a digit is no time (a header, a word): it must not steer the reading
    text = text.to_frame("t").select(pl.when(pl.col("t").str.contains(r"\d"))
                                     .then(pl.col("t"))).to_series()
    values = text.drop_nulls()
    if values.is_empty():
        return pl.Series("ts", [None] * len(text), pl.Int64), ""
    numbers = text.cast(pl.Float64, strict=False)
    if numbers.is_not_null().sum() * 2 > len(values):
        return _epoch(numbers)
    if values.str.contains(_DAY_MONTH)[0]:
        return _day_month(text, path, column)
    parsed = text.str.to_datetime(time_zone="UTC", strict=False)
    return parsed.dt.epoch("ms"), "year-first date/time text (ISO 8601)"


def _skipped_why(cells: tuple, header: list[str]) -> str:
    """Why a row without a time or a price is not a candle."""
    text = ["" if c is None else str(c).strip() for c in cells]
    if not any(text):
        return "blank line"
    if [t.lower() for t in text] == [h.lower().strip() for h in header]:
        return "a repeated header"
    line = ",".join(text)
    return f"not a candle ({(line[:57] + '…') if len(line) > 60 else line!r})"


def read_candles(path: Path, date_format: str | None = None) -> Candles:
    """The file's candle rows, the rows that are not candles, and how the times were read
    (see ``Candles`` and the module docstring). ``date_format``: a ``strftime`` format for
    every time value (text). FeedError names the file and the problem: unreadable, unknown
    type, a missing column, day/month dates of an unknown order, times none of which read."""
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
    column = found["ts"]
    try:
        ts, how = _times(raw[column], path, column, date_format)
        frame = pl.DataFrame({"ts": ts, **{c: _numbers(raw[found[c]]) for c in OHLCV[1:]}})
        if found["trades"] is not None:
            frame = frame.with_columns(_numbers(raw[found["trades"]]).cast(pl.Int64,
                                                                           strict=False)
                                       .alias("trades"))
    except FeedError:
        raise
    except Exception as exc:
        raise FeedError(f"{path}: unreadable values: {exc}") from None
    text = raw[column].cast(pl.String).str.strip_chars()
    has_price = pl.any_horizontal(pl.col(c).is_not_null() for c in ("open", "high", "low",
                                                                    "close"))
    unreadable = "time '{}' is not a date/time" + (f" in --date-format {date_format!r}"
                                                   if date_format else "")
    frame = frame.with_row_index("row", offset=1).with_columns(
        candle=has_price | pl.col("ts").is_not_null(),
        problem=pl.when(pl.col("ts").is_not_null()).then(None)
        .when(text.fill_null("") == "").then(pl.lit("no time"))
        .otherwise(pl.format(unreadable, text)))
    not_candles = frame.filter(~pl.col("candle"))["row"].to_list()
    skipped = [f"row {r}: {_skipped_why(raw.row(r - 1), raw.columns)}" for r in not_candles]
    frame = frame.filter(pl.col("candle")).drop("candle")
    if frame.height and frame["ts"].is_null().all():
        at = int(frame["row"][0])
        needs = (f"does not match --date-format {date_format!r}" if date_format else
                 "is neither a number nor an ISO 8601 date/time; give its format with "
                 "--date-format, e.g. --date-format '%d.%m.%Y %H:%M'")
        raise FeedError(f"{path}: no value of time column {column!r} reads as a time: "
                        f"{text[at - 1]!r} (row {at}) {needs}")
    return Candles(frame, skipped, how)


def read_ohlcv(path: Path, date_format: str | None = None) -> pl.DataFrame:
    """``read_candles(path, date_format).frame``: the candle rows in file order, for
    ``clean_bars``; the rows that are not candles left out."""
    return read_candles(path, date_format).frame


def clean_bars(df: pl.DataFrame, timeframe: int) -> tuple[pl.DataFrame, list[str]]:
    """The rows that make valid bars, sorted by time, duplicates dropped; and why each other
    row was rejected ("row 17: high 99.0 < low 100.0"): by ``row`` when the frame has it (a
    file's, from ``read_candles``), else counted from 1 in frame order; a ``problem`` the
    reader found comes first. The rules are the bar gate's (``shared.market.gate.bar_problem``),
    applied to a frame."""
    from shared.market.gate import frame_problems

    rows = df if "row" in df.columns else df.with_row_index("row", offset=1)
    problems = frame_problems(rows, timeframe)
    if "problem" in rows.columns:
        problems = pl.select(pl.coalesce(pl.lit(rows["problem"]), pl.lit(problems))) \
            .to_series().alias("problem")
    bad = rows.with_columns(problems.alias("problem")).filter(pl.col("problem").is_not_null())
    good = rows.filter(problems.is_null()).sort("row").unique("ts", keep="first") \
        .sort("ts")
    dupes = rows.filter(problems.is_null()).height - good.height
    reasons = [f"row {r}: {p}" for r, p in bad.select("row", "problem").iter_rows()]
    if dupes:
        reasons.append(f"{dupes} duplicate row(s) (same time as an earlier row) dropped")
    return good.drop("row", "problem", strict=False), reasons
