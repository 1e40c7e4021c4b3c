"""The durable market-data store: SQLite (WAL) for recent bars, Parquet day partitions for the
rest. Every closed bar is committed before it is used; batch jobs scan both lazily with polars.

Layout under ``data_dir``:
  market.db                                     recent bars (the write side)
  parquet/symbol=BTCUSDT/date=2023-11-14/bars.parquet   compacted full days (the read side)

The store records the timeframe of its bars (``meta``, at the first insert; a store made before
it did is judged by its newest bars): opened with another ``market.timeframe`` it refuses, naming
both, rather than serve 1m bars as 5m ones.

A partition that cannot be read (truncated, not Parquet, wrong schema) is quarantined, never
deleted: renamed to ``bars.parquet.corrupt-<UTC time>`` beside it, logged with one WARNING
naming it and the reason, and listed in ``BarStore.quarantined``. Every other day goes on being
served. The bad day's bars still in SQLite (a crash between the two steps of a compaction) are
served from there and the next compaction rewrites the partition; when none are left, the day
is a gap, logged, until it is backfilled.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import polars as pl

from shared.config import Config, ConfigError
from shared.market.bars import Bar, symbol_slug, timeframe_ms, timeframe_text
from shared.storage.sqlite import Checkpointer, FileIdentity, open_db, renew_if_replaced

COLUMNS = ("ts", "open", "high", "low", "close", "volume", "trades")
SCHEMA = {"ts": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
          "close": pl.Float64, "volume": pl.Float64, "trades": pl.Int64}
DAY_MS = 86_400_000
QUARANTINE_GLOB = "parquet/symbol=*/date=*/bars.parquet.corrupt-*"   # under data_dir
_READ_ERRORS = (pl.exceptions.PolarsError, OSError)

log = logging.getLogger("bdt.store")


class StoreError(RuntimeError):
    """The store cannot be opened or read (corrupt database, unreadable partition)."""


class TimeframeMismatch(StoreError, ConfigError):
    """market.timeframe is not the timeframe of the bars the store holds."""


# Seed 000 §4.1, with a smaller page cache and mmap: history's whole slice is 500 MB and the
# always-on slices together aim at 600 MB; the hot set here is a few days of bars.
_PRAGMAS = """
    PRAGMA cache_size = -16000;
    PRAGMA temp_store = MEMORY;
    PRAGMA mmap_size = 67108864;
"""


class BarStore:
    """``timeframe`` (ms): the bars' timeframe this opener works at; refused (TimeframeMismatch)
    when the store holds bars of another, recorded at the first insert. None: not checked."""

    def __init__(self, data_dir: Path, synchronous: str = "NORMAL",
                 timeframe: int | None = None) -> None:
        self.data_dir = data_dir
        self.parquet_dir = data_dir / "parquet"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = data_dir / "market.db"
        self.db = open_db(self.db_path, synchronous=synchronous, what="market store",
                          extra_pragmas=_PRAGMAS, error=StoreError)
        try:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS bars (symbol TEXT NOT NULL, ts INTEGER NOT NULL, "
                "open REAL, high REAL, low REAL, close REAL, volume REAL, trades INTEGER, "
                "PRIMARY KEY (symbol, ts)) WITHOUT ROWID")
            # every symbol ever stored: days compacted into Parquet leave no row in `bars`
            self.db.execute("CREATE TABLE IF NOT EXISTS symbols (symbol TEXT PRIMARY KEY)")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"market store {self.db_path}: {exc}; the file is left untouched "
                             "for inspection — move it aside to start a new one") from None
        self._checkpointer = Checkpointer(self.db, self.db_path)
        self.identity = FileIdentity(self.db_path)
        self._synchronous = synchronous
        self._checked: dict[Path, tuple[int, int]] = {}   # partition -> (size, mtime) that passed
        # path, moved_to, reason, when (UTC), sqlite_bars (of that day still in SQLite; None:
        # quarantined by an earlier run)
        self.quarantined: list[dict[str, Any]] = [
            {"path": str(f.with_name("bars.parquet")), "moved_to": str(f),
             "reason": "quarantined by an earlier run", "when": f.name.partition("corrupt-")[2],
             "sqlite_bars": None}
            for f in sorted(data_dir.glob(QUARANTINE_GLOB))]
        self.timeframe, self._timeframe_recorded = timeframe, False
        if timeframe is not None:
            held = self.held_timeframe()
            if held is not None and held != timeframe:
                self.db.close()
                raise TimeframeMismatch(
                    f"market store {data_dir} holds {timeframe_text(held)} bars; "
                    f"market.timeframe is {timeframe_text(timeframe)}: set market.timeframe = "
                    f"{timeframe_text(held)} for this store, or keep {timeframe_text(timeframe)} "
                    "bars in a var directory of their own (BDT_VAR)")
            self._timeframe_recorded = held is not None

    def held_timeframe(self) -> int | None:
        """The timeframe (ms) of the stored bars: as recorded, else the most common step
        between a symbol's newest bars (then recorded), else None (no two bars yet)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'timeframe_ms'").fetchone()
        if row is not None:
            return int(row[0])
        for symbol in self.symbols():
            ts = self.collect(symbol, then=lambda lazy: lazy.select("ts").tail(10_000))["ts"]
            steps = ts.diff().drop_nulls()
            steps = steps.filter(steps > 0)
            if len(steps):
                held = int(steps.mode().min())
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('timeframe_ms', ?)",
                                (str(held),))
                return held
        return None

    def close(self) -> None:
        self.checkpoint()
        self.db.close()

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file; history does it on its periodic tick, off
        the bar path (auto-checkpoints are off: they would stall whichever insert triggers one).
        A reader that holds an old snapshot and starves it is logged (shared.storage.sqlite).
        A market.db deleted or replaced under its writer is first rewritten from the open copy
        (``renew_if_replaced``): the bars stored since are not lost with the unlinked file."""
        self.db, self.identity, note = renew_if_replaced(
            self.db, self.identity, synchronous=self._synchronous, what="market store",
            extra_pragmas=_PRAGMAS, error=StoreError)
        if note:
            self._checkpointer = Checkpointer(self.db, self.db_path)
        self._checkpointer.checkpoint()

    # --- write side ------------------------------------------------------------------------
    def insert(self, bars: Iterable[Bar]) -> int:
        """Commit bars (one transaction); a bar already stored is ignored. Returns rows added."""
        return self._insert_rows([(b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume,
                                   b.trades) for b in bars])

    def insert_frame(self, symbol: str, frame: pl.DataFrame) -> int:
        """Commit a frame of bars (ts, open, high, low, close, volume[, trades]) of ``symbol``
        that are not stored yet — in SQLite *or* in Parquet (so importing twice adds nothing).
        Returns rows added."""
        if frame.is_empty():
            return 0
        first, last = int(frame["ts"].min()), int(frame["ts"].max())
        stored = self.collect(symbol, first, last + 1, then=lambda lazy: lazy.select("ts"))
        new = frame.filter(~pl.col("ts").is_in(stored["ts"].implode()))
        if "trades" not in new.columns:
            new = new.with_columns(pl.lit(0, pl.Int64).alias("trades"))
        return self._insert_rows([(symbol, *row) for row in new.select(COLUMNS).iter_rows()])

    def _insert_rows(self, rows: list[tuple]) -> int:
        if not rows:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.db.total_changes
            self.db.executemany("INSERT OR IGNORE INTO bars VALUES (?,?,?,?,?,?,?,?)", rows)
            added = self.db.total_changes - before
            self.db.executemany("INSERT OR IGNORE INTO symbols VALUES (?)",
                                [(s,) for s in {r[0] for r in rows}])
            if self.timeframe is not None and not self._timeframe_recorded:
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('timeframe_ms', ?)",
                                (str(self.timeframe),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._timeframe_recorded = self.timeframe is not None
        return added

    # --- read side -------------------------------------------------------------------------
    def last_ts(self, symbol: str) -> int | None:
        row = self.db.execute("SELECT max(ts) FROM bars WHERE symbol = ?", (symbol,)).fetchone()
        if row[0] is not None:
            return row[0]
        return self.collect(symbol, then=lambda lazy: lazy.select(pl.col("ts").max())).item()

    def symbols(self) -> list[str]:
        """Every symbol with stored bars (in SQLite or Parquet), sorted."""
        return [r[0] for r in self.db.execute(
            "SELECT symbol FROM symbols UNION SELECT DISTINCT symbol FROM bars ORDER BY 1")]

    def recent(self, symbol: str, n: int) -> list[Bar]:
        """The newest ``n`` bars, oldest first (reaches into Parquet when SQLite has fewer)."""
        df = self.collect(symbol, then=lambda lazy: lazy.tail(n))
        return [Bar(symbol, *row) for row in df.select(COLUMNS).iter_rows()]

    def _sqlite_frame(self, symbol: str, start: int | None, end: int | None) -> pl.DataFrame:
        q = "SELECT ts, open, high, low, close, volume, trades FROM bars WHERE symbol = ?"
        args: list[object] = [symbol]
        if start is not None:
            q, args = q + " AND ts >= ?", [*args, start]
        if end is not None:
            q, args = q + " AND ts < ?", [*args, end]
        rows = self.db.execute(q + " ORDER BY ts", args).fetchall()
        return pl.DataFrame(rows, schema=SCHEMA, orient="row")

    # --- partitions and quarantine ----------------------------------------------------------
    def _check(self, path: Path) -> str | None:
        """Why ``path`` is not a usable partition, or None. Cheap: the footer and the schema, not
        the data; a file that passed is not checked again until its size or mtime changes."""
        try:
            st = path.stat()
            if self._checked.get(path) == (st.st_size, st.st_mtime_ns):
                return None
            schema = pl.read_parquet_schema(path)
        except _READ_ERRORS as exc:
            return f"unreadable: {exc}"
        wrong = [f"{c}: {schema.get(c)}" for c in COLUMNS if schema.get(c) != SCHEMA[c]]
        if wrong:
            return f"wrong schema ({', '.join(wrong)})"
        self._checked[path] = (st.st_size, st.st_mtime_ns)
        return None

    def _partitions(self, symbol: str) -> list[Path]:
        """The symbol's partition files that pass ``_check``; the others are quarantined."""
        good = []
        for path in sorted((self.parquet_dir / f"symbol={symbol_slug(symbol)}")
                           .glob("date=*/bars.parquet")):
            problem = self._check(path)
            if problem is None:
                good.append(path)
            else:
                self._quarantine(symbol, path, problem)
        return good

    def _quarantine(self, symbol: str, path: Path, reason: str) -> None:
        """Move a bad partition aside (renamed beside itself, never deleted), log it and list it
        in ``quarantined``; say whether its day is still in SQLite or is now a gap."""
        when = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        moved = path.with_name(f"{path.name}.corrupt-{when}")
        try:
            os.replace(path, moved)
        except FileNotFoundError:
            return            # already moved aside, by another process reading this store
        self._checked.pop(path, None)
        day = (dt.date.fromisoformat(path.parent.name.removeprefix("date="))
               - dt.date(1970, 1, 1)).days * DAY_MS
        left = self.db.execute("SELECT count(*) FROM bars WHERE symbol = ? AND ts >= ? AND ts < ?",
                               (symbol, day, day + DAY_MS)).fetchone()[0]
        fate = (f"its {left} bars still in SQLite are served from there (the next compaction "
                "rewrites the partition)" if left else
                "none of its bars are in SQLite: the day is a gap until it is backfilled")
        log.warning("quarantined corrupt partition %s (%s): moved to %s; %s",
                    path, reason, moved.name, fate)
        self.quarantined.append({"path": str(path), "moved_to": str(moved), "reason": reason,
                                 "when": when, "sqlite_bars": left})

    def _read_error(self, path: Path) -> str | None:
        """Why reading the whole of ``path`` fails, or None (the slow check, after a failure)."""
        try:
            pl.read_parquet(path, columns=list(COLUMNS))
        except _READ_ERRORS as exc:
            return f"unreadable: {exc}"
        return None

    def _parquet(self, symbol: str) -> pl.LazyFrame | None:
        files = self._partitions(symbol)
        if not files:
            return None
        return pl.scan_parquet(files).select(COLUMNS)

    def scan(self, symbol: str, start: int | None = None, end: int | None = None) -> pl.LazyFrame:
        """All bars of ``symbol`` in [start, end): Parquet partitions plus SQLite, deduplicated.
        Only partitions that pass the footer and schema check are scanned; a bad one is
        quarantined (see the module docstring). ``collect`` also survives a bad data page."""
        frames = [self._sqlite_frame(symbol, start, end).lazy()]
        lazy = self._parquet(symbol)
        if lazy is not None:
            if start is not None:
                lazy = lazy.filter(pl.col("ts") >= start)
            if end is not None:
                lazy = lazy.filter(pl.col("ts") < end)
            frames.insert(0, lazy)
        return pl.concat(frames).unique("ts", keep="last").sort("ts")

    def collect(self, symbol: str, start: int | None = None, end: int | None = None,
                then: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None) -> pl.DataFrame:
        """``scan(symbol, start, end)``, shaped by ``then`` (e.g. a head), collected. When a
        partition passed the footer check but its data cannot be read, each partition is read
        in full to find it; the bad ones are quarantined and the read is retried once."""
        def run() -> pl.DataFrame:
            lazy = self.scan(symbol, start, end)
            return (lazy if then is None else then(lazy)).collect()

        try:
            return run()
        except _READ_ERRORS:
            bad = [(path, problem) for path in self._partitions(symbol)
                   if (problem := self._read_error(path)) is not None]
            if not bad:
                raise                     # not a partition's fault
            for path, problem in bad:
                self._quarantine(symbol, path, problem)
            return run()

    def count_range(self, symbol: str, start: int, end: int) -> int:
        """Bars of ``symbol`` in [start, end) without reading them (row counts only): an
        estimate that counts twice a day caught between compaction's two steps."""
        q = "SELECT count(*) FROM bars WHERE symbol = ? AND ts >= ? AND ts < ?"
        n = self.db.execute(q, (symbol, start, end)).fetchone()[0]
        lazy = self._parquet(symbol)
        if lazy is not None:
            n += lazy.filter((pl.col("ts") >= start) & (pl.col("ts") < end)) \
                .select(pl.len()).collect().item()
        return n

    def count(self, symbol: str) -> int:
        return self.collect(symbol, then=lambda lazy: lazy.select(pl.len())).item()

    # --- compaction ------------------------------------------------------------------------
    def compact(self, symbol: str, keep_days: int) -> int:
        """Move full UTC days older than ``keep_days`` before the newest bar into Parquet.

        Parquet first (temp file + rename), then the SQLite delete: a crash in between leaves
        the rows in both places, and the next run rewrites the same partition — never a loss.
        """
        last = self.last_ts(symbol)
        if last is None:
            return 0
        cutoff = (last // DAY_MS - keep_days) * DAY_MS
        days = [r[0] for r in self.db.execute(
            "SELECT DISTINCT ts / ? FROM bars WHERE symbol = ? AND ts < ?",
            (DAY_MS, symbol, cutoff))]
        moved = 0
        for day in days:
            start, end = day * DAY_MS, (day + 1) * DAY_MS
            date = dt.datetime.fromtimestamp(start / 1000, dt.UTC).date().isoformat()
            part = self.parquet_dir / f"symbol={symbol_slug(symbol)}" / f"date={date}"
            part.mkdir(parents=True, exist_ok=True)
            target = part / "bars.parquet"
            day_df = self._sqlite_frame(symbol, start, end)
            if target.exists():  # a partition from an interrupted earlier run: merge
                try:
                    day_df = pl.concat([pl.read_parquet(target), day_df]).unique("ts").sort("ts")
                except _READ_ERRORS as exc:     # unreadable: moved aside, SQLite's rows kept
                    self._quarantine(symbol, target, f"unreadable: {exc}")
            tmp = part / "bars.parquet.tmp"
            day_df.write_parquet(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            self.db.execute("DELETE FROM bars WHERE symbol = ? AND ts >= ? AND ts < ?",
                            (symbol, start, end))
            moved += day_df.height
        return moved

    def size_bytes(self) -> int:
        files = [self.db_path, self.db_path.with_name("market.db-wal"),
                 *self.parquet_dir.rglob("*.parquet")]
        return sum(f.stat().st_size for f in files if f.exists())


def newest_ts(cfg: Config, symbol: str) -> int | None:
    """The ts of ``symbol``'s newest bar in this var directory's market store (None: none
    stored). StoreError when the store cannot be read."""
    store = open_store(cfg)
    try:
        return store.last_ts(symbol)
    finally:
        store.close()


def open_store(cfg: Config) -> BarStore:
    """The market-data store of this var directory (the one history writes), at
    ``market.timeframe`` (TimeframeMismatch when it holds bars of another); close it."""
    return BarStore(cfg.var_dir / "data" / "market", cfg.get("history.db_synchronous"),
                    timeframe_ms(cfg.get("market.timeframe")))
