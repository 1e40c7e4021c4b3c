"""Market data in: candles from a file (``bdt data import``) or from an exchange's REST history
(``bdt data download``, ccxt ``fetch_ohlcv``) into the market-data store, validated by the bar
gate's rules, idempotent (what is stored already is not added again); and what the store holds
(``bdt data list``: symbols, ranges, gaps). It lives with the store it writes: it reads files
through ``shared.market`` and stores through ``shared.storage.bar_store`` (storage sits above
market; nothing in market imports it).

An import refuses, before storing anything: a store of another timeframe than
``market.timeframe`` (``open_store``), a file whose bars are not that timeframe apart
(``check_spacing``, whatever its length), and the file-level refusals of ``read_candles``
(day/month dates of an unknown order, times none of which read). Then rows that are not candles
(blank lines, repeated headers, summary or footer lines) are skipped, bad candles rejected, each
named by row in the report, and the rest stored."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shared.config import Config, exchange_options
from shared.market.bars import timeframe_ms, timeframe_text, ts_text
from shared.market.files import OHLCV, FeedError, clean_bars, read_candles
from shared.storage.bar_store import BarStore, open_store

log = logging.getLogger("bdt.data")
MAX_REASONS = 20       # rejected rows named in a report; the rest are counted


@dataclass
class ImportReport:
    """What one import did. Times are epoch ms; ``rejected`` (bad candles) and ``skipped``
    (rows that are not candles) name at most MAX_REASONS rows each; ``times`` says how the
    file's times were read. ``rows`` = accepted + rejected_count + skipped_count."""

    source: str
    symbol: str
    rows: int = 0
    accepted: int = 0
    added: int = 0
    rejected_count: int = 0
    rejected: list[str] = field(default_factory=list)
    skipped_count: int = 0
    skipped: list[str] = field(default_factory=list)
    times: str | None = None
    first_ts: int | None = None
    last_ts: int | None = None

    @property
    def already_stored(self) -> int:
        return self.accepted - self.added

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "already_stored": self.already_stored}


def check_spacing(frame: pl.DataFrame, timeframe: int, source: str) -> None:
    """Refuse a file whose bars are not ``timeframe`` apart (5-minute bars into a 1-minute
    store would be wrong, not merely sparse): the most common step between its distinct times,
    over every row with a time — two rows are enough, and the rows off the timeframe's grid
    count too (a 1m file's rows on the 5m grid are 5m apart, yet each is a 1m bar)."""
    times = frame["ts"].drop_nulls().unique().sort()
    steps = times.diff().drop_nulls()
    if steps.is_empty():
        return                                    # one bar: no spacing to judge
    step = int(steps.mode().min())
    if step != timeframe:
        have, want = timeframe_text(step), timeframe_text(timeframe)
        raise FeedError(f"{source}: its bars are {have} apart ({int((steps == step).sum())} of "
                        f"{len(steps)} steps between consecutive bars); market.timeframe, the "
                        f"store's, is {want}: resample the file to {want} first ({have} bars "
                        f"belong in a store of their own: another BDT_VAR with market.timeframe "
                        f"= {have})")


def store_bars(store: BarStore, cfg: Config, symbol: str, bars: pl.DataFrame,
               report: ImportReport) -> None:
    """Add ``bars`` (clean, sorted) to the store, then compact full old days into Parquet."""
    report.added = store.insert_frame(symbol, bars)
    store.compact(symbol, cfg.get("history.compact_keep_days"))
    if not bars.is_empty():
        report.first_ts, report.last_ts = int(bars["ts"][0]), int(bars["ts"][-1])


def import_file(cfg: Config, path: Path, symbol: str, date_format: str | None = None
                ) -> ImportReport:
    """Import an OHLCV file (any format of ``shared.market.files``; ``date_format`` for its
    time text) into the store. Rows that are not candles are skipped and bad candles rejected,
    by name, the rest stored; FeedError when the file cannot be used at all, TimeframeMismatch
    (a ConfigError) when the store holds bars of another timeframe."""
    timeframe = timeframe_ms(cfg.get("market.timeframe"))
    with closing(open_store(cfg)) as store:      # refuses another timeframe before reading
        candles = read_candles(path, date_format)
        frame = candles.frame
        check_spacing(frame, timeframe, str(path))
        good, reasons = clean_bars(frame, timeframe)
        report = ImportReport(str(path), symbol, rows=frame.height + len(candles.skipped),
                              accepted=good.height, rejected_count=frame.height - good.height,
                              rejected=reasons[:MAX_REASONS],
                              skipped_count=len(candles.skipped),
                              skipped=candles.skipped[:MAX_REASONS],
                              times=candles.times or None)
        store_bars(store, cfg, symbol, good, report)
    log.info("imported %s: %d rows, %d added, %d already stored, %d rejected, %d skipped", path,
             report.rows, report.added, report.already_stored, report.rejected_count,
             report.skipped_count)
    return report


def download(cfg: Config, symbol: str, since: int, until: int | None = None, *,
             exchange_id: str | None = None, page: int = 1000,
             progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Fetch ``symbol``'s candles from ``since`` to ``until`` (epoch ms, exclusive; default
    now) through ccxt's REST ``fetch_ohlcv``, ``page`` candles a request, paced by ccxt's rate
    limiter, and store them like an import. The last, still open candle is never stored."""
    import ccxt  # the optional extra "live"

    exchange_id = exchange_id or cfg.get("market.exchange")
    if exchange_id not in ccxt.exchanges:
        raise FeedError(f"exchange {exchange_id!r} is unknown to ccxt")
    setting = cfg.get("market.timeframe")
    timeframe = timeframe_ms(setting)
    open_store(cfg).close()                      # a store of another timeframe: refused now
    exchange = getattr(ccxt, exchange_id)({**exchange_options(cfg), "enableRateLimit": True})
    now = int(time.time() * 1000)
    until = min(until or now, now - now % timeframe)        # the open candle is not final
    rows: list[list[float]] = []
    cursor = since
    try:
        while cursor < until:
            try:
                batch = exchange.fetch_ohlcv(symbol, setting, since=cursor, limit=page)
            except ccxt.BaseError as exc:
                raise FeedError(f"{exchange_id} fetch_ohlcv {symbol} since "
                                f"{ts_text(cursor)} UTC: "
                                f"{type(exc).__name__}: {exc}") from None
            batch = [c for c in batch if cursor <= c[0] < until]
            if not batch:
                break
            rows.extend(batch)
            cursor = int(batch[-1][0]) + timeframe
            if progress:
                progress(len(rows), cursor)
    finally:
        close = getattr(exchange, "close", None)
        if close:
            close()
    frame = pl.DataFrame([r[:6] for r in rows], schema=list(OHLCV), orient="row") \
        .with_columns(pl.col("ts").cast(pl.Int64), *(pl.col(c).cast(pl.Float64)
                                                     for c in OHLCV[1:]))
    good, reasons = clean_bars(frame, timeframe)
    report = ImportReport(f"{exchange_id} {symbol}", symbol, rows=frame.height,
                          accepted=good.height, rejected_count=frame.height - good.height,
                          rejected=reasons[:MAX_REASONS])
    with closing(open_store(cfg)) as store:
        store_bars(store, cfg, symbol, good, report)
    return report


def holdings(cfg: Config) -> list[dict[str, Any]]:
    """Per stored symbol: bars, first and last bar time, and the gaps (count, missing bars,
    the largest with its start)."""
    timeframe = timeframe_ms(cfg.get("market.timeframe"))
    store = open_store(cfg)
    try:
        out = []
        for symbol in store.symbols():
            ts = store.collect(symbol, then=lambda lazy: lazy.select("ts"))["ts"]
            if ts.is_empty():
                continue
            steps = ts.diff().drop_nulls()
            gaps = steps.filter(steps > timeframe)
            largest = int(gaps.max()) if len(gaps) else 0
            at = int(ts[int((ts.diff() == largest).arg_max())] - largest) if len(gaps) else None
            out.append({"symbol": symbol, "bars": len(ts), "first_ts": int(ts[0]),
                        "last_ts": int(ts[-1]), "gaps": len(gaps),
                        "missing_bars": int((gaps // timeframe - 1).sum()) if len(gaps) else 0,
                        "largest_gap_bars": largest // timeframe - 1 if largest else 0,
                        "largest_gap_after_ts": at})
        return out
    finally:
        store.close()
