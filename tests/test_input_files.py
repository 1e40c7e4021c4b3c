"""What a user's candle file says is what is stored (issue "Trading numbers you can trust", case
8): day/month dates that could be either are refused unless `--date-format` says which, rows
that are not candles are named and skipped (a good value is never blamed for them), and a
file's spacing is checked against the store's timeframe however short or long the file is.
Each test runs `bdt data import` as a user types it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import polars as pl
import pytest

from shared.market.synthetic import SyntheticMarket
from tests.helpers import child_env

M = 60_000


def bdt(var: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bdt", *args], env=child_env(var, **env), capture_output=True,
                          text=True, timeout=120)


def ms(text: str) -> int:
    """'2024-01-02 00:00' (UTC) as epoch ms."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def candles(start: str, n: int, step: int = M) -> pl.DataFrame:
    return SyntheticMarket("BTC/USDT", step, 3, start_ts=ms(start)).frame(n).drop("trades")


def write_dated(frame: pl.DataFrame, path: Path, time_format: str) -> Path:
    """``frame`` as a CSV whose ``date`` column is written with ``time_format``."""
    frame.with_columns(pl.from_epoch("ts", "ms").dt.strftime(time_format).alias("date")) \
        .select("date", "open", "high", "low", "close", "volume").write_csv(path)
    return path


def stored(var: Path) -> list[dict]:
    out = bdt(var, "data", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --- day/month order -------------------------------------------------------------------------
def test_us_dates_that_could_be_either_order_are_refused_naming_column_row_and_flag(tmp_path):
    """01/02/2024 00:00 (2 January, US order) was stored as 1 February without a word."""
    path = write_dated(candles("2024-01-02 00:00", 300), tmp_path / "us.csv", "%m/%d/%Y %H:%M")
    out = bdt(tmp_path / "var", "data", "import", str(path))
    assert out.returncode == 1, out.stdout
    assert "column 'date'" in out.stderr and "'01/02/2024 00:00' (row 1)" in out.stderr
    assert "--date-format '%m/%d/%Y %H:%M'" in out.stderr and "Traceback" not in out.stderr
    assert stored(tmp_path / "var") == []                       # nothing stored


def test_date_format_says_the_order(tmp_path):
    path = write_dated(candles("2024-01-02 00:00", 300), tmp_path / "us.csv", "%m/%d/%Y %H:%M")
    out = bdt(tmp_path / "var", "data", "import", str(path), "--date-format", "%m/%d/%Y %H:%M")
    assert out.returncode == 0, out.stderr
    assert "BTC/USDT 2024-01-02 00:00 … 2024-01-02 04:59 UTC" in out.stdout
    [held] = stored(tmp_path / "var")
    assert held["first_ts"] == ms("2024-01-02 00:00") and held["bars"] == 300
    listed = bdt(tmp_path / "var", "data", "list").stdout.splitlines()
    assert "first (UTC)" in listed[0] and "2024-01-02 00:00" in listed[1]


@pytest.mark.parametrize(("time_format", "order"), [("%m/%d/%Y %H:%M", "month first"),
                                                     ("%d/%m/%Y %H:%M:%S", "day first"),
                                                     ("%d.%m.%Y %H:%M", "day first")])
def test_a_day_above_12_settles_the_order_without_a_flag(tmp_path, time_format, order):
    frame = candles("2024-01-12 22:00", 240)                     # 12 → 13 January
    path = write_dated(frame, tmp_path / "dated.csv", time_format)
    out = bdt(tmp_path / "var", "data", "import", str(path))
    assert out.returncode == 0, out.stderr
    assert "2024-01-12 22:00 … 2024-01-13 01:59 UTC" in out.stdout and order in out.stdout
    assert stored(tmp_path / "var")[0]["first_ts"] == ms("2024-01-12 22:00")


def test_rows_of_both_orders_are_refused(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("date,open,high,low,close,volume\n"
                    "13/01/2024 00:00,1,1,1,1,1\n"
                    "01/13/2024 00:01,1,1,1,1,1\n")
    out = bdt(tmp_path / "var", "data", "import", str(path))
    assert out.returncode == 1
    assert "row 1" in out.stderr and "row 2" in out.stderr and "--date-format" in out.stderr


def test_iso_and_epoch_files_import_as_before(tmp_path):
    frame = candles("2024-01-02 00:00", 120)
    iso = write_dated(frame, tmp_path / "iso.csv", "%Y-%m-%dT%H:%M:%SZ")
    epoch = tmp_path / "epoch.csv"
    frame.with_columns((pl.col("ts") // 1000).alias("timestamp")).drop("ts").write_csv(epoch)
    for path in (iso, epoch):
        out = bdt(tmp_path / path.stem, "data", "import", str(path))
        assert out.returncode == 0, out.stderr
        assert stored(tmp_path / path.stem)[0]["first_ts"] == ms("2024-01-02 00:00")


# --- rows that are not candles ---------------------------------------------------------------
def test_repeated_headers_blank_and_footer_lines_are_named_and_skipped(tmp_path):
    """A repeated header used to refuse the file blaming a good value: "time value
    '1704153600000' is neither a number nor an ISO date/time"."""
    frame = candles("2024-01-02 00:00", 6)
    lines = frame.rename({"ts": "open_time"}).write_csv().splitlines()
    header, rows = lines[0], lines[1:]
    text = [header, *rows[:2], "", *rows[2:4], header, *rows[4:], ",,,,,", "Total,,,,,42"]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(text) + "\n")
    out = bdt(tmp_path / "var", "data", "import", str(path))
    assert out.returncode == 0, out.stderr
    assert "6 added" in out.stdout and "0 rejected" in out.stdout and "4 skipped" in out.stdout
    for line in ("skipped row 3: blank line", "skipped row 6: a repeated header",
                 "skipped row 9: blank line", "skipped row 10: not a candle ('Total,,,,,42')"):
        assert line in out.stdout, out.stdout
    assert "1704153600000" not in out.stdout + out.stderr
    assert stored(tmp_path / "var")[0]["bars"] == 6


def test_a_bad_time_in_a_candle_row_is_rejected_by_row_and_value(tmp_path):
    lines = write_dated(candles("2024-01-02 00:00", 5), tmp_path / "a.csv",
                        "%Y-%m-%d %H:%M").read_text().splitlines()
    lines[3] = "yesterday" + lines[3][lines[3].index(","):]
    path = tmp_path / "b.csv"
    path.write_text("\n".join(lines) + "\n")
    out = bdt(tmp_path / "var", "data", "import", str(path))
    assert out.returncode == 0, out.stderr
    assert "rejected row 3: time 'yesterday' is not a date/time" in out.stdout, out.stdout
    assert "4 added" in out.stdout


# --- spacing against the store's timeframe ---------------------------------------------------
def test_a_short_file_of_another_timeframe_is_refused(tmp_path):
    """Under three rows the spacing was not checked at all: two 5m bars went into a 1m store."""
    path = tmp_path / "two.csv"
    candles("2024-01-02 00:00", 2, 5 * M).write_csv(path)
    out = bdt(tmp_path / "var", "data", "import", str(path))
    assert out.returncode == 1 and "5m apart" in out.stderr and "1m" in out.stderr
    assert stored(tmp_path / "var") == []


def test_a_long_1m_file_into_a_5m_store_is_refused(tmp_path):
    """The spacing was judged after the rows off the 5m grid were dropped: a 1m file went into
    a 5m store as every fifth one-minute bar, each stored as a five-minute bar."""
    path = tmp_path / "1m.csv"
    candles("2024-01-02 00:00", 3000).write_csv(path)
    out = bdt(tmp_path / "var", "data", "import", str(path), BDT_MARKET__TIMEFRAME="5m")
    assert out.returncode == 1 and "1m apart" in out.stderr and "5m" in out.stderr
    assert stored(tmp_path / "var") == []


def test_a_long_5m_file_with_one_close_pair_is_refused(tmp_path):
    """The smallest step decided: one pair of bars a minute apart let 3000 5m bars in."""
    frame = candles("2024-01-02 00:00", 3000, 5 * M)
    stray = frame.head(1).with_columns(pl.col("ts") + M)
    path = tmp_path / "5m.csv"
    pl.concat([frame, stray]).sort("ts").write_csv(path)
    out = bdt(tmp_path / "var", "data", "import", str(path))
    assert out.returncode == 1 and "5m apart" in out.stderr
    assert stored(tmp_path / "var") == []


def test_a_5m_file_at_5m_into_a_store_of_1m_bars_is_refused_naming_both(tmp_path):
    """The file's spacing agrees with market.timeframe=5m; the store's bars do not."""
    one = tmp_path / "1m.csv"
    candles("2024-01-02 00:00", 300).write_csv(one)
    assert bdt(tmp_path / "var", "data", "import", str(one)).returncode == 0
    five = tmp_path / "5m.csv"
    candles("2024-01-03 00:00", 300, 5 * M).write_csv(five)
    out = bdt(tmp_path / "var", "data", "import", str(five), BDT_MARKET__TIMEFRAME="5m")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "holds 1m bars" in out.stderr and "market.timeframe is 5m" in out.stderr
    assert stored(tmp_path / "var")[0]["bars"] == 300
