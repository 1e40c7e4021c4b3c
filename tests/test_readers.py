"""Each store's owner provides its readers (issue 25 item 4): the dashboard reads the trading
state, the monitor's database and the job runs through ``TradingReader``, ``MonitorReader`` and
``JobRunsReader`` — read-only, one snapshot, nothing created — and the model registry through
``read_catalogue``; equity and today's P&L are one computation (``shared.trading.account``)
that the engine, its records, the risk rule and the dashboard all use. The drift tests fail
when SQL comes back into the dashboard or the CLI, or a second equity or P&L formula appears."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from services.dashboard import data
from services.monitor.store import MonitorDB, MonitorReader
from shared.config import load_config
from shared.jobs.runs import JobRuns, JobRunsReader
from shared.market.bars import Bar
from shared.models.registry import read_catalogue
from shared.storage.trading_state import TradingDB, TradingReader
from shared.trading import account
from shared.trading.engine import TradingEngine
from shared.trading.types import Fill, OrderRequest, Position, Prediction
from tests.helpers import REPO

M = 60_000
SYMBOL = "BTC/USDT"


def digests(folder: Path) -> dict[str, str]:
    """Every file but SQLite's -wal/-shm (a read-only reader may leave empty ones)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def add_fill(db: TradingDB, ts: int, qty: float) -> None:
    with db.transaction() as conn:
        order = OrderRequest(f"o{ts}", SYMBOL, "buy", qty, reason="test")
        db.insert_order(order, ts, "filled", conn)
        db.record_fill(conn, Fill(order.client_id, SYMBOL, "buy", qty, 100.0, 0.01, ts), 0.0)


# --- read-only, one snapshot ----------------------------------------------------------------
def test_a_reader_sees_one_snapshot_while_the_writer_goes_on(tmp_path):
    """The live page reads fills, position and equity in one read transaction: a fill the bot
    commits between two of its queries cannot show in one and not the other (moved here from
    test_dashboard.py with the SQL it tested)."""
    path = tmp_path / "trading.db"
    writer = TradingDB(path)
    add_fill(writer, 1 * M, 1.0)
    with TradingReader.open(path) as state:
        assert state.fill_count() == 1
        add_fill(writer, 2 * M, 2.0)                  # BEGIN IMMEDIATE: not blocked by it
        assert [f["qty"] for f in state.fills(limit=None)] == [1.0]
        assert state.fill_count() == 1
    with TradingReader.open(path) as state:
        assert state.fill_count() == 2
        assert [f["qty"] for f in state.fills(symbol=SYMBOL)] == [1.0, 2.0]
        assert state.fills(symbol="ETH/USDT") == []
    writer.close()


def make_stores(folder: Path) -> None:
    db = TradingDB(folder / "trading.db")
    add_fill(db, M, 0.5)
    with db.transaction() as conn:
        db.save_position(conn, Position(SYMBOL, 0.5, 100.0, M))
    db.close()
    monitor = MonitorDB(folder / "monitor.db", 7, 90)
    monitor.add_alert(M, "restart", "warning", "bot", "bot restarted", {"n": 1}, True)
    monitor.add_mode(M, "low_resource", "normal", "memory", 1, 2.0)
    monitor.close()
    runs = JobRuns(folder / "jobs.db")
    runs.add("backtest", "2026-01-01T03:00:00+09:00", "scheduled")
    runs.close()


READS = [
    (TradingReader, "trading.db", lambda s: (s.account(), s.position(SYMBOL), s.fills(),
                                             s.closes(SYMBOL), s.equity_curve(),
                                             s.latest_equity(), s.fill_count())),
    (MonitorReader, "monitor.db", lambda s: (s.alerts(), s.modes(), s.history("bot"),
                                             s.resource_history(0, 60_000),
                                             s.program_history(0))),
    (JobRunsReader, "jobs.db", lambda s: (s.history(), s.seen_at(), s.in_state("queued"))),
]


@pytest.mark.parametrize(("reader", "name", "reads"), READS, ids=[r[1] for r in READS])
def test_readers_write_nothing_create_nothing_and_cannot_write(tmp_path, reader, name, reads):
    make_stores(tmp_path)
    before = digests(tmp_path)
    with reader.open(tmp_path / name) as store:
        reads(store)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.db.execute("CREATE TABLE intruder (x)")
    assert digests(tmp_path) == before
    with pytest.raises(sqlite3.OperationalError), reader.open(tmp_path / "missing.db"):
        pass
    assert not (tmp_path / "missing.db").exists()


def test_the_dashboards_readers_on_an_empty_var_directory_create_nothing(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    assert data.resource_history(var, 1, 0) == data.alerts(var, 1, 0) == []
    assert data.job_runs(var) == data.mode_changes(var) == data.models(var / "models") == []
    assert read_catalogue(var / "models") == []
    assert "error" in data.trading(var, SYMBOL, 1)
    assert list(var.rglob("*")) == []


def test_the_dashboard_reads_what_the_owners_wrote(tmp_path):
    (tmp_path / "data").mkdir()
    make_stores(tmp_path / "data")
    [alert] = data.alerts(tmp_path, 1e6, 2 * M)
    assert (alert["kind"], alert["message"], alert["notified"]) == ("restart", "bot restarted",
                                                                    True)
    assert [m["mode"] for m in data.mode_changes(tmp_path)] == ["low_resource"]
    [run] = data.job_runs(tmp_path)
    assert (run["job"], run["state"], run["trigger"]) == ("backtest", "queued", "scheduled")
    live = data.trading(tmp_path, SYMBOL, 1)
    assert [f["kind"] for f in live["fills"]] == ["entry"] and live["fills_total"] == 1
    assert live["position"]["qty"] == 0.5


# --- one equity, one day P&L ----------------------------------------------------------------
def test_equity_and_todays_pnl_are_one_computation_the_engine_and_the_dashboard_share(var_dir):
    """The bot's figures (engine.equity / today_pnl: its status, bdt, the cache snapshot) and
    the dashboard's (from the bot's records) are the same numbers."""
    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_STRATEGY__MAX_HOLD_BARS": "50"})
    engine = TradingEngine(cfg, TradingDB(var_dir / "data" / "trading.db"), SYMBOL, M)
    assert engine.today_pnl() is None                          # no bar has started a day
    assert data.trading(var_dir, SYMBOL, 24)["today_pnl"] is None
    try:
        for i, close in enumerate([100.0, 101.0, 103.0, 102.5, 104.0], start=1):
            bar = Bar(SYMBOL, i * M, close, close, close, close, 1.0)
            prediction = Prediction(SYMBOL, i * M, 0.01, 0.8, 0.001, "v1")
            planned = engine.decide(bar, prediction, 0.01, "v1")
            assert planned is not None
            engine.execute(bar, *planned, prediction)
        assert engine.position.qty > 0                          # the figures move with price
        live = data.trading(var_dir, SYMBOL, 24)
        assert live["latest"]["equity"] == engine.equity() == account.equity(
            engine.cash, engine.position.qty, 104.0)
        assert live["today_pnl"] == engine.today_pnl() == account.day_pnl(
            engine.equity(), engine.risk.state.day_start_equity)
        assert engine.today_pnl() != 0.0
    finally:
        engine.state.close()


# The one place equity (cash plus the position's value) and today's P&L (equity less the day's
# starting equity) are computed; a line elsewhere adding to cash, or subtracting on a line that
# names the day's starting equity, is a second formula.
EQUITY = re.compile(r"\bcash\s*\+(?!=)|\+\s*(self\.)?cash\b")
MINUS = re.compile(r"[\w\])]\s*-(?!=)\s*[\w(\[]")       # a binary minus, not -= or -1


def where(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


def formulas(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        if path == REPO / "shared" / "trading" / "account.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if EQUITY.search(line) or ("day_start_equity" in line and MINUS.search(line)):
                found.append(f"{where(path)}:{n}: {line.strip()}")
    return found


def test_no_second_equity_or_day_pnl_formula():
    assert formulas(sources("shared", "services", "scheduler")) == []


def test_the_formula_check_catches_a_second_formula(tmp_path):
    rogue = tmp_path / "rogue.py"
    for line in ("return self.cash + self.position.qty * mark",
                 "pnl = latest['equity'] - risk['day_start_equity']",
                 "loss = s.day_start_equity - equity"):
        rogue.write_text(line + "\n")
        assert formulas([rogue]), line
    rogue.write_text("cash += proceeds\nstart = day_pnl(equity, s.day_start_equity)\n")
    assert formulas([rogue]) == []


# --- no SQL outside the stores' owners ------------------------------------------------------
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE TABLE|PRAGMA)\b|\bsqlite3\b")


def sql_lines(paths: list[Path]) -> list[str]:
    return [f"{where(path)}:{n}: {line.strip()}" for path in paths
            for n, line in enumerate(path.read_text().splitlines(), 1) if SQL.search(line)]


def test_the_dashboard_and_the_cli_hold_no_sql():
    """They read every store through its owner's methods (``TradingReader``,
    ``MonitorReader``, ``JobRunsReader``, the registry, the reports): a query written here
    would be a second copy of a store's schema."""
    assert sql_lines(sources("services/dashboard", "shared/cli")) == []


def test_the_sql_check_catches_a_query(tmp_path):
    rogue = tmp_path / "rogue.py"
    rogue.write_text('import sqlite3\nrows = q("SELECT ts FROM equity")\n')
    assert len(sql_lines([rogue])) == 2
    rogue.write_text('st.selectbox("select a report")\n')
    assert sql_lines([rogue]) == []
