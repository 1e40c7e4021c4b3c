"""Stores that survive their faults (issue 24): a corrupt store with history refuses with its
path and the way out and is left untouched; a corrupt derived store is moved aside (never
deleted) and made anew; a store deleted or replaced under its running owner is noticed and
rewritten from the open copy, losing nothing; `bdt doctor` names each."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from shared.config import load_config
from shared.market.bars import Bar
from shared.storage.sqlite import MOVED_ASIDE, FileIdentity, open_db
from shared.storage.trading_state import StateError, TradingDB
from shared.trading.engine import TradingEngine
from shared.trading.types import Intent
from tests.helpers import child_env

SYM = "BTC/USDT"
M = 60_000
T0 = 1_700_006_400_000


def garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(16 << 10))


def test_a_corrupt_store_with_history_is_refused_naming_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "trading.db"
    garbage(path)
    before = path.read_bytes()
    with pytest.raises(StateError, match=rf"state database {path} is unusable .* left untouched: "
                                         rf"restore it from a backup, or move it aside \(mv "):
        TradingDB(path)
    assert path.read_bytes() == before


def test_a_corrupt_derived_store_is_moved_aside_and_made_anew(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    path = tmp_path / "derived.db"
    garbage(path)
    before = path.read_bytes()
    conn = open_db(path, synchronous="NORMAL", what="test store", derived=True)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    [moved] = [p for p in tmp_path.iterdir() if p.name.startswith("derived.db.corrupt-")]
    assert moved.read_bytes() == before
    assert MOVED_ASIDE[-1] == {"what": "test store", "path": str(path), "moved_to": str(moved),
                               "reason": "file is not a database"}
    assert f"test store {path} is unusable (file is not a database): moved aside to {moved}" \
        in caplog.text


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_the_trading_state_deleted_under_the_bot_loses_nothing(var_dir: Path, tmp_path: Path,
                                                               how: str) -> None:
    """The bot's engine books fills; trading.db is deleted (or another file renamed over it)
    while it runs; the next check rewrites it from the open copy, and what is booked after
    lands in the new file."""
    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_STRATEGY__NAME": "sma_cross"})
    path = var_dir / "data" / "trading.db"
    db = TradingDB(path)
    engine = TradingEngine(cfg, db, SYM, M)

    def bar(i: int, target: float) -> None:
        b = Bar(SYM, T0 + i * M, 100.0, 100.0, 100.0, 100.0, 1.0)
        engine.risk.on_bar(b, engine.equity(100.0))
        engine.execute(b, Intent(target, "t"), "t", None)

    bar(0, 1.0)
    bar(1, 0.0)
    assert db.reopen_if_replaced() is None
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    else:
        other = tmp_path / "other.db"
        sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.close()
        os.replace(other, path)
    assert FileIdentity(path).key != db.identity.key
    note = db.reopen_if_replaced()
    assert note is not None and "rewritten from the open copy, nothing lost" in note
    assert ("kept as" in note) == (how == "replaced")
    bar(2, 0.5)
    db.close()
    again = TradingDB(path)
    assert [f["side"] for f in again.fills()] == ["buy", "sell", "buy"]
    assert again.position(SYM).qty == 0.5
    again.close()


def test_bdt_doctor_names_a_corrupt_store_and_what_was_moved_aside(var_dir: Path) -> None:
    garbage(var_dir / "data" / "jobs.db")
    moved = var_dir / "data" / "monitor.db.corrupt-20261207T000000Z"
    moved.write_bytes(b"x")
    done = subprocess.run(["bdt", "doctor"], capture_output=True, text=True,
                          env=child_env(var_dir), timeout=60)
    jobs = var_dir / "data" / "jobs.db"
    assert f"FAIL  job runs {jobs}: unusable (file is not a database)" in done.stdout, done.stdout
    assert f"WARN  moved aside: {moved}" in done.stdout
    assert done.returncode != 0


def test_job_runs_deleted_under_the_scheduler_keep_the_current_runs_outcome(tmp_path: Path
                                                                            ) -> None:
    from shared.jobs.runs import JobRuns

    path = tmp_path / "data" / "jobs.db"
    runs = JobRuns(path)
    first = runs.add("backtest", "2026-12-01 03:00 UTC", "schedule")
    running = runs.add("walkforward", "2026-12-06 02:00 UTC", "schedule")
    assert first is not None and running is not None
    runs.update(first.id, state="ok")
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    runs.update(running.id, state="ok", reason="done")        # the outcome of the run going on
    runs.close()
    again = JobRuns(path)
    assert [(r.job, r.state) for r in again.history()] == [("walkforward", "ok"),
                                                           ("backtest", "ok")]
    again.close()


def test_the_market_store_deleted_under_history_keeps_its_bars(tmp_path: Path) -> None:
    """history checkpoints the store on every tick: a market.db deleted under it is rewritten
    from the open copy there, and bars stored after land in the new file."""
    from shared.storage.bar_store import BarStore

    store = BarStore(tmp_path / "market")
    store.insert([Bar(SYM, T0 + i * M, 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(3)])
    for suffix in ("", "-wal", "-shm"):
        store.db_path.with_name(store.db_path.name + suffix).unlink(missing_ok=True)
    store.checkpoint()                                      # history's tick
    store.insert([Bar(SYM, T0 + 3 * M, 1.0, 1.0, 1.0, 1.0, 1.0)])
    store.close()
    again = BarStore(tmp_path / "market")
    assert again.count(SYM) == 4
    again.close()
