"""Market data in (issue 13): every format people have, malformed rows named and dropped,
wrong headers and truncated files refused or trimmed with a clear error, idempotent imports,
the frame gate equal to the bar gate, and downloads through ccxt against a local fake."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import polars as pl
import pytest

from shared.config import load_config
from shared.market.bars import Bar
from shared.market.files import FeedError, clean_bars, read_ohlcv
from shared.market.gate import bar_problem, frame_problems
from shared.market.synthetic import SyntheticMarket
from shared.storage.importing import download, holdings, import_file

M = 60_000
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "BTCUSDT-1m-2023-03-01_21-binanceus.csv"


@pytest.fixture
def bars() -> pl.DataFrame:
    return SyntheticMarket("BTC/USDT", M, 11).frame(3000).drop("trades")


def write_formats(df: pl.DataFrame, tmp: Path) -> dict[str, Path]:
    iso = df.with_columns(pl.from_epoch("ts", "ms").dt.replace_time_zone("UTC")
                          .dt.to_string("%Y-%m-%d %H:%M:%S%:z").alias("open_time")).drop("ts")
    paths = {
        "kline_iso": tmp / "kline.csv",
        "binance_headerless": tmp / "BTCUSDT-1m-2023-03.csv",
        "freqtrade_json": tmp / "BTC_USDT-1m.json",
        "epoch_seconds": tmp / "seconds.csv",
        "parquet": tmp / "bars.parquet",
        "records_json": tmp / "records.json",
    }
    iso.select("open_time", "open", "high", "low", "close", "volume").write_csv(
        paths["kline_iso"])
    headerless = df.with_columns((pl.col("ts") + M - 1).alias("close_time"),
                                 (pl.col("close") * pl.col("volume")).alias("quote"),
                                 pl.lit(7).alias("n"), pl.lit(0.5).alias("tb"),
                                 pl.lit(1.0).alias("tq"), pl.lit(0).alias("ignore"))
    headerless.write_csv(paths["binance_headerless"], include_header=False)
    paths["freqtrade_json"].write_text(json.dumps(df.rows()))
    df.with_columns((pl.col("ts") // 1000).alias("timestamp")).drop("ts").write_csv(
        paths["epoch_seconds"])
    df.rename({"ts": "date"}).with_columns(pl.from_epoch("date", "ms")).write_parquet(
        paths["parquet"])
    paths["records_json"].write_text(json.dumps(df.rename({"ts": "t", "open": "o",
                                                           "high": "h", "low": "l",
                                                           "close": "c", "volume": "v"})
                                                .to_dicts()))
    return paths


def test_every_format_reads_to_the_same_bars(bars, tmp_path):
    for name, path in write_formats(bars, tmp_path).items():
        got = read_ohlcv(path)
        assert got["ts"].to_list() == bars["ts"].to_list(), name
        for col in ("open", "high", "low", "close", "volume"):
            assert np.allclose(got[col].to_numpy(), bars[col].to_numpy()), (name, col)


def test_the_real_exchange_export_reads_and_imports_idempotently(tmp_path):
    if not REAL.exists():
        pytest.skip(f"{REAL} not beside the checkout")
    cfg = load_config({"BDT_VAR": str(tmp_path / "var")})
    first = import_file(cfg, REAL, "BTC/USDT")
    assert (first.rows, first.added, first.rejected_count) == (30240, 30240, 0)
    assert first.first_ts == 1677628800000                     # 2023-03-01 00:00 UTC
    again = import_file(cfg, REAL, "BTC/USDT")
    assert (again.added, again.already_stored) == (0, 30240)   # importing twice adds nothing
    [held] = holdings(cfg)
    assert (held["bars"], held["gaps"]) == (30240, 0)


def test_malformed_rows_are_named_and_the_rest_kept(bars, tmp_path):
    text = bars.head(10).write_csv().splitlines()
    text[3] = text[3].replace(",", ",abc,", 1).rsplit(",", 1)[0]       # a word for a price
    cells = text[5].split(",")
    cells[3] = str(float(cells[2]) + 1000)                                # low > high
    text[5] = ",".join(cells)
    text[7] = text[7].split(",", 1)[0] + ",,,,,"                          # empty values
    text.append(text[9])                                                 # a duplicate row
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(text) + "\n")
    good, reasons = clean_bars(read_ohlcv(path), M)
    assert good.height == 7
    assert any(r.startswith("row 3: empty or non-numeric") for r in reasons), reasons
    assert any(r.startswith("row 5: high") for r in reasons), reasons
    assert any(r.startswith("row 7: empty or non-numeric") for r in reasons), reasons
    assert any("1 duplicate row" in r for r in reasons), reasons


def test_wrong_headers_and_unknown_files_are_refused_naming_what_is_missing(bars, tmp_path):
    path = tmp_path / "wrong.csv"
    bars.rename({"close": "last"}).write_csv(path)
    with pytest.raises(FeedError, match=r"missing column\(s\) close \(close: one of close, c"):
        read_ohlcv(path)
    odd = tmp_path / "bars.xlsx"
    odd.write_bytes(b"PK")
    with pytest.raises(FeedError, match="unknown file type"):
        read_ohlcv(odd)
    dates = tmp_path / "dates.csv"
    dates.write_text("time,open,high,low,close,volume\nyesterday,1,1,1,1,1\n")
    with pytest.raises(FeedError, match=r"'yesterday' \(row 1\) is neither a number nor an ISO"):
        read_ohlcv(dates)


def test_a_truncated_file_loses_only_its_cut_row(bars, tmp_path):
    path = tmp_path / "cut.csv"
    bars.head(100).write_csv(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 20])          # cut inside the last row
    good, reasons = clean_bars(read_ohlcv(path), M)
    assert good.height == 99 and len(reasons) == 1 and reasons[0].startswith("row 100:")
    broken = tmp_path / "cut.parquet"
    bars.write_parquet(broken)
    broken.write_bytes(broken.read_bytes()[:500])
    with pytest.raises(FeedError, match=f"{broken}: unreadable"):
        read_ohlcv(broken)


def test_a_file_of_another_timeframe_is_refused(bars, tmp_path):
    cfg = load_config({"BDT_VAR": str(tmp_path / "var")})
    path = tmp_path / "5m.csv"
    bars.filter(pl.col("ts") % (5 * M) == 0).write_csv(path)
    with pytest.raises(FeedError, match="bars are 5m apart .*; market.timeframe, the store's, "
                                        "is 1m"):
        import_file(cfg, path, "BTC/USDT")


def test_the_frame_gate_and_the_bar_gate_agree():
    rng = np.random.default_rng(5)
    n = 2000
    base = rng.uniform(50, 150, n)
    df = pl.DataFrame({
        "ts": (np.arange(n) * M + rng.choice([0, 0, 0, 17], n)).astype(np.int64),
        "open": base * rng.choice([1, 1, 1.2, -1], n), "high": base * rng.choice([1.01, 0.9], n),
        "low": base * rng.choice([0.99, 1.1, np.nan], n), "close": base,
        "volume": rng.choice([1.0, 0.0, -1.0, np.inf], n)})
    frame = frame_problems(df, M).to_list()
    for row, problem in zip(df.iter_rows(), frame, strict=True):
        assert bar_problem(Bar("X", *row), M) == problem, row


class _Klines(BaseHTTPRequestHandler):
    candles: list[list] = []
    calls: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path != "/api/v3/klines":
            self.send_error(404)
            return
        self.calls.append(q)
        since, limit = int(q.get("startTime", 0)), int(q.get("limit", 500))
        rows = [c for c in self.candles if c[0] >= since][:limit]
        body = json.dumps([[c[0], *map(str, c[1:6]), c[0] + M - 1, "0", 1, "0", "0", "0"]
                           for c in rows]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_download_pages_through_fetch_ohlcv_and_stores_idempotently(bars, tmp_path):
    from tests.fake_exchange import MARKET_ID, binance_market

    def spot_market() -> dict:
        """A ccxt spot market, pre-loaded: ccxt then never asks for exchangeInfo."""
        return {**binance_market(), "info": {"symbol": MARKET_ID,
                                             "orderTypes": ["LIMIT", "MARKET"]}}

    _Klines.candles, _Klines.calls = bars.head(2500).rows(), []
    server = HTTPServer(("127.0.0.1", 0), _Klines)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = f"http://127.0.0.1:{server.server_address[1]}/api/v3"
        options = {"urls": {"api": {"public": api, "private": api}},
                   "markets": {"BTC/USDT": spot_market()}, "rateLimit": 1}
        cfg = load_config({"BDT_VAR": str(tmp_path / "var"),
                           "BDT_MARKET__EXCHANGE_OPTIONS": json.dumps(options)})
        start, end = int(bars["ts"][0]), int(bars["ts"][2500])
        report = download(cfg, "BTC/USDT", start, end, page=1000)
        assert (report.rows, report.added) == (2500, 2500)
        assert [int(c["startTime"]) for c in _Klines.calls][:3] == [start, start + 1000 * M,
                                                                    start + 2000 * M]
        assert download(cfg, "BTC/USDT", start, end, page=1000).added == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_bdt_loads_polars_only_for_the_verbs_that_read_files():
    """Every `bdt` call imports the verb modules: a top-level polars import (+90 ms, +23 MiB
    peak RSS here) in one of them was paid by `bdt status`, `bdt cgexec` and every verb."""
    code = ("import sys; import shared.cli; "
            "assert 'polars' not in sys.modules, 'polars loaded by import shared.cli'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
