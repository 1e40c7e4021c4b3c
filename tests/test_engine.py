"""The trading engine (strategy → risk → broker → state) without the bus: what the bot does
per bar, on hand-made bars and predictions — with the durable state, and with the in-memory
state a backtest uses."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import pytest

from shared.config import load_config
from shared.market.bars import Bar
from shared.storage.sqlite import WAL_SIZE_LIMIT
from shared.storage.trading_state import StateError, TradingDB
from shared.trading.engine import TradingEngine
from shared.trading.memory_state import MemoryState
from shared.trading.types import Prediction
from tests.helpers import REPO

M = 60_000
SYMBOL = "BTC/USDT"
VERSION = "v1"


@pytest.fixture
def cfg(var_dir):
    return load_config({"BDT_VAR": str(var_dir), "BDT_STRATEGY__MAX_HOLD_BARS": "3"})


def bar(i: int, close: float = 100.0) -> Bar:
    return Bar(SYMBOL, i * M, close, close, close, close, 1.0)


def pred(i: int, er: float = 0.01, p_up: float = 0.8, vol: float = 0.001,
         version: str = VERSION) -> Prediction:
    return Prediction(SYMBOL, i * M, er, p_up, vol, version)


def make(cfg, path) -> TradingEngine:
    return TradingEngine(cfg, TradingDB(path), SYMBOL, M)


def test_memory_state_runs_the_same_engine_to_the_same_record(cfg, tmp_path):
    """One engine, two states: entries, a stop, a time limit and holds, decided and filled
    alike; every decision, fill and equity point equal."""
    closes = [100.0, 100.5, 101.0, 99.0, 98.0, 98.5, 99.0, 100.0, 101.0, 102.0, 101.5, 101.0,
              100.0, 99.5, 99.0]
    durable, memory = make(cfg, tmp_path / "t.db"), TradingEngine(cfg, MemoryState(), SYMBOL, M)
    for engine in (durable, memory):
        for i, close in enumerate(closes, start=1):
            er = 0.01 if i % 4 else -0.01
            engine.on_bar(bar(i, close), pred(i, er=er), 0.01, VERSION)
    assert memory.state.decisions() == durable.state.decisions()
    assert memory.state.fills() == durable.state.fills()
    assert memory.state.equity_curve() == durable.state.equity_curve()
    assert len(memory.state.fills()) >= 4            # several round trips, not all holds
    assert (memory.position, memory.cash) == (durable.position, durable.cash)
    assert memory.state.position(SYMBOL) == durable.state.position(SYMBOL)


def test_entry_is_filled_recorded_and_restored_after_a_restart(cfg, tmp_path):
    db_path = tmp_path / "trading.db"
    t = make(cfg, db_path)
    d = t.on_bar(bar(1), pred(1), 0.01, VERSION)
    assert d.action == "buy" and d.qty > 0 and len(d.fills) == 1
    fill = d.fills[0]
    # hand-computed: market buy at close·(1 + spread/2 + slippage), fee on notional
    assert fill.price == pytest.approx(100.0 * (1 + 0.0001 / 2 + 0.00005))
    assert fill.fee == pytest.approx(fill.qty * fill.price * 0.0004)
    assert t.cash == pytest.approx(10_000.0 - fill.qty * fill.price - fill.fee)
    before = (t.position.qty, t.position.avg_price, t.cash, t.position.realized_pnl)
    t.state.close()
    again = make(cfg, db_path)                                  # the bot after a kill -9
    assert (again.position.qty, again.position.avg_price, again.cash,
            again.position.realized_pnl) == before
    assert again.on_bar(bar(1), pred(1), 0.01, VERSION) is None  # already decided: no resend
    assert len(again.state.fills()) == 1


def test_a_replay_after_a_gap_decides_only_the_undecided_bar(cfg, tmp_path):
    db_path = tmp_path / "trading.db"
    t = make(cfg, db_path)
    for i in (1, 3, 4):                          # bar 2 missed (e.g. its decision failed)
        t.on_bar(bar(i), pred(i), 0.01, VERSION)
    before = t.state.fills()
    t.state.close()
    again = make(cfg, db_path)                   # restart; the feed replays bars 1..4
    replay = [again.on_bar(bar(i), pred(i), 0.01, VERSION) for i in (1, 2, 3, 4)]
    assert [d is None for d in replay] == [True, False, True, True]
    assert [d["bar_ts"] for d in again.state.decisions()] == [M, 2 * M, 3 * M, 4 * M]
    after = again.state.fills()                     # only bar 2 may add fills: none repeated
    assert [f for f in after if f["ts"] != 2 * M] == before
    assert len({f["client_id"] for f in after}) == len(after)


def test_every_bar_gets_a_decision_and_exits_follow_the_rules(cfg, tmp_path):
    t = make(cfg, tmp_path / "t.state")
    actions = [t.on_bar(bar(i), pred(i), 0.01, VERSION).action for i in range(1, 6)]
    assert actions == ["buy", "hold", "hold", "sell", "buy"]       # time limit after 3 bars
    assert len(t.state.decisions()) == 5
    reasons = [d["reason"] for d in t.state.decisions()]
    assert "time limit" in reasons[3]
    assert len(t.state.equity_curve()) == 5


def test_no_entry_on_a_stale_or_foreign_prediction(cfg, tmp_path):
    t = make(cfg, tmp_path / "t.state")
    assert t.on_bar(bar(1), pred(1), 6.0, VERSION).action == "hold"          # 6 s old
    assert t.on_bar(bar(2), pred(2, version="other"), 0.01, VERSION).action == "hold"
    assert t.on_bar(bar(3), None, 0.5, VERSION, "no prediction within 500 ms").action == "hold"
    reasons = [d["reason"] for d in t.state.decisions()]
    assert "stale prediction" in reasons[0]
    assert "unexpected model version" in reasons[1]
    assert "no prediction" in reasons[2]
    assert t.state.fills() == []


def test_stop_fires_without_a_prediction(cfg, tmp_path):
    t = make(cfg, tmp_path / "t.state")
    t.on_bar(bar(1), pred(1), 0.01, VERSION)
    d = t.on_bar(bar(2, close=90.0), None, 0.5, VERSION, "no prediction within 500 ms")
    assert d.action == "sell" and "stop" in d.reason
    assert t.position.is_flat and t.position.realized_pnl < 0


def test_critical_mode_blocks_entries_but_not_exits(cfg, tmp_path):
    t = make(cfg, tmp_path / "t.state")
    t.on_bar(bar(1), pred(1), 0.01, VERSION)
    t.risk.set_mode("critical")
    assert t.on_bar(bar(2, close=90.0), pred(2), 0.01, VERSION).action == "sell"   # stop
    d = t.on_bar(bar(3), pred(3), 0.01, VERSION)
    assert d.action == "hold" and "critical resource mode" in d.reason


def test_kill_switch_flattens_and_survives_a_restart(cfg, tmp_path):
    cfg = load_config({"BDT_VAR": str(cfg.var_dir), "BDT_RISK__MAX_DRAWDOWN": "0.001",
                       "BDT_STRATEGY__STOP_VOL_MULTIPLE": "1000"})
    t = make(cfg, tmp_path / "t.state")
    t.on_bar(bar(1), pred(1), 0.01, VERSION)
    d = t.on_bar(bar(2, close=50.0), pred(2), 0.01, VERSION)
    assert d.action == "sell" and "kill switch" in d.reason and t.risk.state.killed
    t.state.close()
    again = make(cfg, tmp_path / "t.state")
    assert again.risk.state.killed
    assert again.on_bar(bar(3), pred(3), 0.01, VERSION).action == "hold"


def test_operator_flatten(cfg, tmp_path):
    t = make(cfg, tmp_path / "t.state")
    t.on_bar(bar(1), pred(1), 0.01, VERSION)
    d = t.flatten("operator flatten", "n1")
    assert d.action == "sell" and t.position.is_flat
    assert t.flatten("operator flatten", "n2") is None
    assert [f["reason"] for f in t.state.fills()][-1] == "operator flatten"


def test_a_corrupt_state_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "trading.db"
    path.write_bytes(b"garbage" * 1000)
    before = path.read_bytes()
    with pytest.raises(StateError, match="unusable.*left untouched"):
        TradingDB(path)
    assert path.read_bytes() == before


def test_a_damaged_page_is_found_by_the_integrity_check(cfg, tmp_path):
    path = tmp_path / "trading.db"
    t = make(cfg, path)
    for i in range(1, 40):
        t.on_bar(bar(i), pred(i), 0.01, VERSION)
    t.state.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // 4096):           # scribble over every b-tree page header
        data[page * 4096: page * 4096 + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(StateError):
        TradingDB(path)


def test_a_round_trip_that_loses_only_to_fees_counts_as_a_loss(cfg, tmp_path):
    cfg = load_config({"BDT_VAR": str(cfg.var_dir), "BDT_STRATEGY__MAX_HOLD_BARS": "1",
                       "BDT_RISK__LOSSES_BEFORE_COOLDOWN": "1"})
    t = make(cfg, tmp_path / "t.state")
    t.on_bar(bar(1, close=100.0), pred(1), 0.01, VERSION)
    # entry at 100.01 (spread, slippage), fee 0.04; exit at 100.07·0.9999 = 100.06, fee 0.04:
    # the closing fill alone nets +0.01 (it would look like a win), the round trip −0.03
    d = t.on_bar(bar(2, close=100.07), pred(2), 0.01, VERSION)
    closing = d.fills[0]
    assert (closing.price - t.state.fills()[0]["price"]) * closing.qty - closing.fee > 0
    assert d.action == "sell" and t.position.realized_pnl < 0
    assert t.risk.state.cooldown_until_ts > 0               # the loss was counted
    assert "cooldown" in t.on_bar(bar(3), pred(3), 0.01, VERSION).reason


def cached_bytes(path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


@pytest.mark.skipif(shutil.which("fincore") is None, reason="fincore (util-linux) not installed")
def test_checkpoint_leaves_the_state_files_out_of_the_page_cache(tmp_path):
    db = TradingDB(tmp_path / "trading.db")
    for n in range(20):                                   # ~2 MB of decisions
        with db.transaction(money=False) as conn:
            for i in range(500):
                db.record_decision(conn, SYMBOL, n * 500 + i, 100.0,
                                   Prediction(SYMBOL, n * 500 + i, 0.0, 0.5, 0.01, "v1"),
                                   "hold", 0.0, "x" * 100)
    path = tmp_path / "trading.db"
    db.checkpoint()
    assert path.stat().st_size > 1 << 20
    assert cached_bytes(path) == 0                        # written back, then forgotten
    assert db.last_decided_ts(SYMBOL) == 9999             # nothing lost
    assert db.db.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
    db.close()


WRITER = """
import sys
from pathlib import Path
from shared.storage.trading_state import TradingDB
db = TradingDB(Path(sys.argv[1]))
def decide(ts):
    with db.transaction(money=False) as conn:
        db.record_decision(conn, "BTC/USDT", ts, 100.0, None, "hold", 0.0, "")
decide(1)
db.checkpoint()
decide(2)
print("ready", flush=True)
sys.stdin.readline()            # meanwhile another process reads the state and closes
decide(3)
print("done", flush=True)
sys.stdin.readline()            # killed here: no close, no last checkpoint
"""


def test_a_reader_closing_beside_a_checkpointed_bot_loses_no_commit(tmp_path):
    """The bot's checkpoint must keep its SQLite locks on the file: if it lost them (closing any
    descriptor of the file drops a process's POSIX locks), a reader's close believes it is the
    last connection and deletes the WAL that the bot goes on committing into."""
    path = tmp_path / "trading.db"
    bot = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=REPO,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert bot.stdout.readline().strip() == "ready"
        reader = sqlite3.connect(path)           # `bdt trades`, a backup, a test
        assert reader.execute("SELECT count(*) FROM decisions").fetchone()[0] == 2
        reader.close()
        bot.stdin.write("\n")
        bot.stdin.flush()
        assert bot.stdout.readline().strip() == "done"
    finally:
        bot.kill()
        bot.wait()
        bot.stdin.close()
        bot.stdout.close()
    db = TradingDB(path)
    assert db.last_decided_ts(SYMBOL) == 3                # every commit survived the kill
    db.close()
