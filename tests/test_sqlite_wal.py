"""Issue 12 case 7: every SQLite file of the project keeps its WAL bounded, and a reader that
starves checkpoints (a long read transaction, an open sqlite3 shell) is reported naming the
file. Both stores open through shared.storage.sqlite; both are tested."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from shared.market.bars import Bar
from shared.storage.bar_store import BarStore
from shared.storage.sqlite import WAL_SIZE_LIMIT
from shared.storage.trading_state import TradingDB


def market_store(tmp_path):
    store = BarStore(tmp_path / "market")

    def write(i: int) -> None:
        store.insert([Bar("BTC/USDT", i * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0)])
    return store, store.db_path, write


def trading_state(tmp_path):
    state = TradingDB(tmp_path / "trading.db")

    def write(i: int) -> None:
        with state.transaction(money=False) as conn:
            state.record_equity(conn, i * 60_000, 1.0, 1.0, 0.0)
    return state, state.path, write


@pytest.mark.parametrize("open_store", [market_store, trading_state])
def test_a_starved_checkpoint_is_reported_and_the_wal_shrinks_after(open_store, tmp_path,
                                                                    caplog):
    store, path, write = open_store(tmp_path)
    write(0)
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sqlite_master").fetchone()   # holds a snapshot
    store._checkpointer.warn_bytes = 1 << 20
    wal = path.with_name(path.name + "-wal")
    i = 1
    while wal.stat().st_size <= WAL_SIZE_LIMIT + (2 << 20):
        for _ in range(500):
            write(i)
            i += 1
    with caplog.at_level(logging.WARNING, logger="bdt.sqlite"):
        store.checkpoint()
    warned = [r.getMessage() for r in caplog.records if r.name == "bdt.sqlite"]
    assert len(warned) == 1 and str(wal) in warned[0] and "old snapshot" in warned[0]
    assert store._checkpointer.starved >= 1
    reader.rollback()
    reader.close()
    store.checkpoint()                      # now complete: the next write restarts the WAL …
    write(i)
    assert wal.stat().st_size <= WAL_SIZE_LIMIT   # … cut back to journal_size_limit
    store.close()
