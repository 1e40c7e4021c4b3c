"""The trading bot end to end under the real supervisord, on accelerated replay: decisions and
fills persisted for every bar; kill -9 of the bot (state restored, nothing sent twice); kill -9
of the predictor (nothing opened on missing predictions, trading resumes); a critical mode
event (no new entries)."""

from __future__ import annotations

import os
import signal
import sqlite3
from contextlib import closing

import pytest

from shared.bus.streams import Publisher
from shared.storage.trading_state import TradingDB
from tests.helpers import wait_until
from tests.stack import AUTOSTART, PAST, Recorder, Stack, make_stack

# trade often: short holds, any positive edge
TRADING = {"BDT_STRATEGY__MAX_HOLD_BARS": "5", "BDT_STRATEGY__ENTRY_THRESHOLD": "0.0",
           "BDT_STRATEGY__P_UP_MARGIN": "0.0"}


@pytest.fixture
def stacks():
    made: list[Stack] = []
    yield made
    for stack in made:
        stack.remove()


def started(stacks: list[Stack], total: int, **env: str) -> tuple[Stack, Recorder]:
    stack = make_stack(total, **TRADING, **env)
    stacks.append(stack)
    stack.start().wait_running(AUTOSTART)
    return stack, Recorder(stack)


def state_db(stack: Stack) -> sqlite3.Connection:
    return sqlite3.connect(stack.var / "data" / "trading.db")


def fills_in_db(stack: Stack) -> int:
    """Read by another process while the bot writes, as a backup or the sqlite3 shell would:
    its connection closing must not take the bot's WAL with it."""
    with closing(state_db(stack)) as con:
        return con.execute("SELECT count(*) FROM fills").fetchone()[0]


def fills_per_order(con: sqlite3.Connection) -> list[int]:
    return [n for (n,) in con.execute("SELECT count(*) FROM fills GROUP BY client_id")]


def test_kill_9_bot_restores_state_and_sends_nothing_twice(stacks):
    total = 1600
    stack, rec = started(stacks, total)
    try:
        rec.until(lambda: stack.status("bot")["decisions"] > 300 and fills_in_db(stack) >= 4,
                  what="trading under way")
        timings = stack.call("bot", "latency", last=100)   # each bar: prediction, then decision
        assert {"bar_to_prediction", "bar_to_decision", "decision_to_record"} <= set(timings)
        assert timings["bar_to_prediction"]["n"] > 0 and timings["bar_to_decision"]["n"] > 0
        assert timings["bar_to_prediction"]["p50_us"] <= timings["bar_to_decision"]["p50_us"]
        os.kill(stack.pids()["bot"], signal.SIGKILL)
        rec.bars.close()                    # the restarted bot now waits for its 3rd subscriber
        db = TradingDB(stack.var / "data" / "trading.db")
        pos = db.position("BTC/USDT")
        at_kill = (pos.qty, pos.avg_price, pos.realized_pnl, db.get("cash"), len(db.fills()))
        db.close()
        wait_until(lambda: stack.status("bot").get("started") is False, timeout=30,
                   what="the bot to come back")
        s = stack.status("bot")
        restored = (s["position"]["qty"], s["position"]["avg_price"],
                    s["position"]["realized_pnl"], s["cash"])
        assert restored == pytest.approx(at_kill[:4])
        rec.bars = rec.bars.__class__(["bars"], stack.cfg)    # let it go on
        wait_until(lambda: stack.status("bot")["feed_finished"], timeout=90, what="replay end")
    finally:
        rec.close()
    stack.shutdown()
    con = state_db(stack)
    assert set(fills_per_order(con)) <= {1}            # market orders: one fill each, none twice
    decided = {t for (t,) in con.execute("SELECT bar_ts FROM decisions")}
    stored = {t for (t,) in sqlite3.connect(stack.var / "data" / "market" / "market.db")
              .execute("SELECT ts FROM bars ORDER BY ts")}
    replayed = sorted(stored)[PAST:]
    missing = [t for t in replayed if t not in decided]
    assert len(replayed) == total
    assert len(missing) <= 1                            # at most the bar in flight at the kill
    fills = con.execute("SELECT count(*) FROM fills").fetchone()[0]
    assert fills > at_kill[4]                           # it went on trading


def test_predictor_down_and_critical_mode_open_nothing(stacks):
    total = 2500
    stack, rec = started(stacks, total, BDT_BOT__PREDICTION_WAIT_MS="200")
    events = None
    try:
        rec.until(lambda: stack.status("bot")["decisions"] > 200, what="trading under way")
        os.kill(stack.pids()["predictor"], signal.SIGKILL)
        killed_at = rec.bar_ts[-1]
        rec.until(lambda: stack.status("bot")["decided_without_prediction"] >= 3,
                  what="bars decided without a prediction")
        rec.until(lambda: stack.status("predictor")["predictions_published"] > 20, timeout=60,
                  what="the restarted predictor to predict")
        # critical mode, announced on `events` by a stand-in for the monitor
        stack.ctl("stop", "bitdaytrader:monitor")
        events = Publisher("monitor", stack.cfg)
        # the bot, predictor, cache and scheduler all subscribe to `events`: announce the mode
        # until the bot has it, so one that joins late (the zguide's slow joiner) is not missed
        def announce(mode: str):
            def check() -> bool:
                events.publish("events", {"kind": "mode", "mode": mode})
                return stack.status("bot")["risk"]["mode"] == mode
            return check
        rec.until(announce("critical"), what="mode")
        critical_from = rec.bar_ts[-1]
        rec.until(lambda: rec.bar_ts[-1] > critical_from + 300 * 60_000, timeout=60,
                  what="300 bars in critical mode")
        rec.until(announce("normal"), what="mode back")
        normal_from = rec.bar_ts[-1]
        rec.until(lambda: stack.status("bot")["feed_finished"], timeout=120, what="replay end")
    finally:
        if events is not None:
            events.close()
        rec.close()
    stack.shutdown()
    con = state_db(stack)
    rows = con.execute("SELECT bar_ts, prediction, action, reason FROM decisions "
                       "ORDER BY bar_ts").fetchall()
    blind = [r for r in rows if r[1] is None and r[0] > killed_at]
    assert blind and all(r[2] != "buy" for r in blind)      # nothing opened without a prediction
    assert any(r[1] is not None for r in rows if r[0] > blind[-1][0])   # predictions resumed
    critical = [r for r in rows if critical_from < r[0] <= normal_from]
    assert all(r[2] != "buy" for r in critical)
    assert any("critical resource mode" in r[3] for r in critical)      # an entry was vetoed
    assert any(r[2] == "buy" for r in rows if r[0] > normal_from + 60_000)   # trades again
