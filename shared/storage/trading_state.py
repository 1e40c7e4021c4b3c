"""The bot's durable state: orders, fills, positions, cash, risk state, equity snapshots and
every decision, in SQLite (WAL, synchronous=FULL: this is money, and one commit per bar is
cheap). On restart the bot restores everything from here.

An order row is written *before* the order leaves the process, under a client id derived
from the bar, so a decision replayed after a crash finds its order already there and never
sends it twice. A paper fill is recorded in the same transaction as its order, position and
cash change: there is no moment at which one exists without the others.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.storage.sqlite import (
    Checkpointer,
    FileIdentity,
    Reader,
    open_db,
    renew_if_replaced,
    rows,
)
from shared.trading.risk import RiskState
from shared.trading.state import FINAL_STATUSES, prediction_record
from shared.trading.types import Fill, OrderRequest, Position, Prediction

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL,
    type TEXT NOT NULL, limit_price REAL, reason TEXT, bar_ts INTEGER NOT NULL,
    status TEXT NOT NULL, exchange_id TEXT, error TEXT, created_at REAL, updated_at REAL);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL REFERENCES orders(client_id),
    symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL,
    fee REAL NOT NULL, ts INTEGER NOT NULL, liquidity TEXT NOT NULL, realized_pnl REAL NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY, qty REAL NOT NULL, avg_price REAL NOT NULL, opened_ts INTEGER,
    realized_pnl REAL NOT NULL);
CREATE TABLE IF NOT EXISTS account (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS equity (
    ts INTEGER PRIMARY KEY, equity REAL NOT NULL, cash REAL NOT NULL, position_value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    symbol TEXT NOT NULL, bar_ts INTEGER NOT NULL, close REAL NOT NULL, prediction TEXT,
    action TEXT NOT NULL, target_qty REAL NOT NULL, reason TEXT NOT NULL, created_at REAL,
    PRIMARY KEY (symbol, bar_ts));
"""
# Columns added to a table after its first release, declared only here: every database, new or
# made before, gets them at open (after SCHEMA), in this order.
ADDED_COLUMNS = {"fills": ("fee_asset TEXT NOT NULL DEFAULT ''",
                           "fee_asset_qty REAL NOT NULL DEFAULT 0",
                           "fee_asset_value REAL NOT NULL DEFAULT 0",
                           "note TEXT NOT NULL DEFAULT ''")}


PRAGMAS = "PRAGMA foreign_keys = ON;"


class StateError(RuntimeError):
    """The state database cannot be used; the file is left exactly as it was."""


class TradingQueries:
    """Every read of the trading state, on ``self.db``: the bot's ``TradingDB`` and, in other
    processes, ``TradingReader`` (read-only) run the same queries. ``limit=None``: no limit."""

    db: sqlite3.Connection

    # --- account ---------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM account WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def account(self) -> dict[str, Any]:
        """Every account value by key (cash, risk_state, last_close, …)."""
        return {key: json.loads(value)
                for key, value in self.db.execute("SELECT key, value FROM account")}

    def position(self, symbol: str) -> Position:
        row = self.db.execute("SELECT qty, avg_price, opened_ts, realized_pnl FROM positions "
                              "WHERE symbol = ?", (symbol,)).fetchone()
        return Position(symbol) if row is None else Position(symbol, *row)

    # --- orders and fills ------------------------------------------------------------------
    def order_exists(self, client_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM orders WHERE client_id = ?",
                               (client_id,)).fetchone() is not None

    def fill_count(self, client_id: str | None = None) -> int:
        """Fills of the order ``client_id``; of every order when None."""
        if client_id is None:
            return self.db.execute("SELECT count(*) FROM fills").fetchone()[0]
        return self.db.execute("SELECT count(*) FROM fills WHERE client_id = ?",
                               (client_id,)).fetchone()[0]

    def open_orders(self) -> list[dict[str, Any]]:
        """Orders without a final status (sent, open, unknown, fills_pending): reconciled on
        start and polled while running."""
        return rows(self.db.execute("SELECT client_id, symbol, side, qty, type, limit_price, "
                                    "reason, bar_ts, status, created_at FROM orders WHERE status "
                                    "NOT IN (?,?,?) ORDER BY created_at", FINAL_STATUSES))

    def fills(self, since_ts: int = 0, limit: int | None = 1000, symbol: str | None = None
              ) -> list[dict[str, Any]]:
        """The newest ``limit`` fills at or after ``since_ts`` (of ``symbol``), oldest first,
        each with its order's reason."""
        cur = self.db.execute("SELECT f.ts, f.client_id, f.symbol, f.side, f.qty, f.price, f.fee,"
                              " f.liquidity, f.fee_asset, f.fee_asset_qty, f.fee_asset_value, "
                              "f.note, f.realized_pnl, o.reason FROM fills f JOIN orders o "
                              "USING (client_id) WHERE f.ts >= ? AND (? IS NULL OR f.symbol = ?)"
                              " ORDER BY f.id DESC LIMIT ?",
                              (since_ts, symbol, symbol, _limit(limit)))
        return rows(cur)[::-1]

    # --- decisions and equity --------------------------------------------------------------
    def decided(self, symbol: str, bar_ts: int) -> bool:
        return self.db.execute("SELECT 1 FROM decisions WHERE symbol = ? AND bar_ts = ?",
                               (symbol, bar_ts)).fetchone() is not None

    def last_decided_ts(self, symbol: str) -> int | None:
        return self.db.execute("SELECT max(bar_ts) FROM decisions WHERE symbol = ?",
                               (symbol,)).fetchone()[0]

    def closes(self, symbol: str, since_ts: int = 0) -> list[dict[str, Any]]:
        """Each decided bar of ``symbol`` at or after ``since_ts``, oldest first: its time
        (``ts``), close, the action taken and why — the price as the bot saw it."""
        return rows(self.db.execute("SELECT bar_ts AS ts, close, action, reason FROM decisions "
                                    "WHERE symbol = ? AND bar_ts >= ? ORDER BY bar_ts",
                                    (symbol, since_ts)))

    def equity_curve(self, since_ts: int = 0, limit: int | None = 10_000
                     ) -> list[dict[str, Any]]:
        """The newest ``limit`` equity rows at or after ``since_ts``, oldest first."""
        found = self.db.execute("SELECT ts, equity, cash, position_value FROM equity WHERE ts >= ?"
                                " ORDER BY ts DESC LIMIT ?", (since_ts, _limit(limit))).fetchall()
        return [dict(ts=r[0], equity=r[1], cash=r[2], position_value=r[3])
                for r in reversed(found)]

    def latest_equity(self) -> dict[str, Any] | None:
        """The newest equity row (equity, cash, position value at the last decided bar)."""
        curve = self.equity_curve(limit=1)
        return curve[-1] if curve else None

    def decisions(self, since_ts: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT bar_ts, close, action, target_qty, reason, prediction FROM "
                              "decisions WHERE bar_ts >= ? ORDER BY bar_ts DESC LIMIT ?",
                              (since_ts, limit))
        return _predictions(rows(cur)[::-1])

    def first_decided_ts(self, symbol: str) -> int | None:
        return self.db.execute("SELECT min(bar_ts) FROM decisions WHERE symbol = ?",
                               (symbol,)).fetchone()[0]

    def decisions_between(self, symbol: str, start: int, end: int) -> list[dict[str, Any]]:
        """``symbol``'s decisions on bars with start ≤ bar_ts < end (epoch ms), oldest first
        (the parity check's side of the live bot)."""
        cur = self.db.execute("SELECT bar_ts, close, action, target_qty, reason, prediction FROM "
                              "decisions WHERE symbol = ? AND bar_ts >= ? AND bar_ts < ? ORDER "
                              "BY bar_ts", (symbol, start, end))
        return _predictions(rows(cur))


def _predictions(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decision rows with their prediction JSON read back."""
    for row in found:
        row["prediction"] = None if row["prediction"] is None else json.loads(row["prediction"])
    return found


def _limit(limit: int | None) -> int:
    """SQLite's LIMIT for ``limit`` (-1: none)."""
    return -1 if limit is None else limit


class TradingReader(Reader, TradingQueries):
    """The trading state read by another process (the dashboard): ``with
    TradingReader.open(path) as state`` — read-only, one snapshot (``shared.storage.sqlite``)."""


class TradingDB(TradingQueries):
    """The durable ``TradingState`` (shared.trading.state) in SQLite: the bot's, the one
    writer; its reads are ``TradingQueries``'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # wal_autocheckpoint = 0 (open_db): SQLite would otherwise checkpoint inside whichever
        # commit crosses 1000 pages — a 10 ms stall mid-decision. The bot checkpoints when idle.
        self.db = open_db(path, synchronous="FULL", what="state database", error=StateError,
                          extra_pragmas=PRAGMAS)
        self.identity = FileIdentity(path)
        try:
            self.db.executescript(SCHEMA)
            self._add_columns()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StateError(f"state database {path} is unusable ({exc}); it was left "
                             f"untouched: restore it from a backup, or move it aside (mv {path} "
                             f"{path}.corrupt) to start an empty one") from None
        self._sync = "FULL"
        self._checkpointer = Checkpointer(self.db, path)
        # For checkpoint()'s page-cache advice, open for the connection's whole life: closing
        # any descriptor of the file would drop every POSIX lock this process holds on it,
        # SQLite's included, and another process's connection closing then believes it is the
        # last one and deletes the WAL this one goes on committing into.
        self._cache_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def _add_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def reopen_if_replaced(self) -> str | None:
        """When the file was deleted or replaced under this process (``FileIdentity``), write
        everything held into a new file at the path and go on there (``reopen_replaced``);
        one line saying so, or None when the file is still this one's."""
        if not self.identity.replaced():
            return None
        os.close(self._cache_fd)
        self.db, self.identity, note = renew_if_replaced(
            self.db, self.identity, synchronous="FULL", what="state database",
            extra_pragmas=PRAGMAS, error=StateError)
        self._sync = "FULL"
        self._checkpointer = Checkpointer(self.db, self.path)
        self._cache_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return note

    def close(self) -> None:
        try:
            self.checkpoint()
        finally:
            self.db.close()
            os.close(self._cache_fd)      # only now: SQLite holds no lock on the file any more

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file (between bars, never during a decision),
        then drop the database file's clean pages from the page cache: the bot only appends,
        SQLite keeps the pages it reuses in its own cache, and the kernel's copy of a file that
        grows with every decision would only count against the bot's slice (~300 MiB after
        2.7 million bars). The WAL's pages stay: its next frames overwrite them in place, and
        dropped pages would be read back from disk inside the next commit."""
        self._checkpointer.checkpoint()
        os.posix_fadvise(self._cache_fd, 0, 0, os.POSIX_FADV_DONTNEED)

    @contextmanager
    def transaction(self, money: bool = True) -> Iterator[sqlite3.Connection]:
        """``money``: the transaction holds an order or a fill — fsync it (synchronous=FULL).
        A hold decision commits with NORMAL: in WAL mode a process crash cannot lose it, only
        a power cut could, and that costs nothing but a decision-log line."""
        sync = "FULL" if money else "NORMAL"
        if sync != self._sync:       # a statement fewer on most bars
            self.db.execute(f"PRAGMA synchronous = {sync}")
            self._sync = sync
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # --- account ---------------------------------------------------------------------------
    def put(self, key: str, value: Any, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.db).execute("INSERT OR REPLACE INTO account VALUES (?, ?)",
                                  (key, json.dumps(value)))

    def put_many(self, items: dict[str, Any], conn: sqlite3.Connection) -> None:
        """Several account values in one statement (the bot saves its state every bar)."""
        conn.executemany("INSERT OR REPLACE INTO account VALUES (?, ?)",
                         [(key, json.dumps(value)) for key, value in items.items()])

    def save_position(self, conn: sqlite3.Connection, p: Position) -> None:
        conn.execute("INSERT OR REPLACE INTO positions VALUES (?,?,?,?,?)",
                     (p.symbol, p.qty, p.avg_price, p.opened_ts, p.realized_pnl))

    # --- orders and fills ------------------------------------------------------------------
    def insert_order(self, order: OrderRequest, bar_ts: int, status: str,
                     conn: sqlite3.Connection | None = None) -> None:
        now = time.time()
        (conn or self.db).execute(
            "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL,?,?)",
            (order.client_id, order.symbol, order.side, order.qty, order.type, order.limit_price,
             order.reason, bar_ts, status, now, now))

    def set_order_status(self, client_id: str, status: str, exchange_id: str | None = None,
                         error: str | None = None, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.db).execute(
            "UPDATE orders SET status = ?, exchange_id = coalesce(?, exchange_id), error = ?, "
            "updated_at = ? WHERE client_id = ?", (status, exchange_id, error, time.time(),
                                                   client_id))

    def record_fill(self, conn: sqlite3.Connection, fill: Fill, realized_pnl: float) -> None:
        """One fill, with the P&L it realized, inside ``conn``'s transaction."""
        conn.execute("INSERT INTO fills (client_id, symbol, side, qty, price, fee, ts, "
                     "liquidity, realized_pnl, fee_asset, fee_asset_qty, fee_asset_value, note) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (fill.client_id, fill.symbol, fill.side, fill.qty, fill.price, fill.fee,
                      fill.ts, fill.liquidity, realized_pnl, fill.fee_asset, fill.fee_asset_qty,
                      fill.fee_asset_value, fill.note))

    # --- decisions and equity --------------------------------------------------------------
    def save_bar(self, conn: sqlite3.Connection, last_close: float, last_bar_ts: int,
                 last_volatility: float | None, risk: RiskState) -> None:
        self.put_many({"last_close": last_close, "last_bar_ts": last_bar_ts,
                       "last_volatility": last_volatility, "risk_state": risk.to_dict()}, conn)

    def record_decision(self, conn: sqlite3.Connection, symbol: str, bar_ts: int, close: float,
                        prediction: Prediction | None, action: str,
                        target_qty: float, reason: str) -> None:
        pred = prediction_record(prediction)
        conn.execute("INSERT OR IGNORE INTO decisions VALUES (?,?,?,?,?,?,?,?)",
                     (symbol, bar_ts, close, json.dumps(pred) if pred else None,
                      action, target_qty, reason, time.time()))

    def record_equity(self, conn: sqlite3.Connection, ts: int, equity: float, cash: float,
                      position_value: float) -> None:
        conn.execute("INSERT OR REPLACE INTO equity VALUES (?,?,?,?)",
                     (ts, equity, cash, position_value))
