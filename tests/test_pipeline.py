"""Market data to predictions under the real supervisord: replay → bot → bars → history
(durable) and predictor → predictions; kill -9 of history and of the predictor mid-replay."""

from __future__ import annotations

import os
import signal

import pytest

from shared.storage.bar_store import BarStore
from tests.helpers import wait_until
from tests.stack import AUTOSTART, PAST, SYMBOL, Recorder, Stack, make_stack


@pytest.fixture
def stack_factory():
    made: list[Stack] = []

    def factory(total_bars: int) -> Stack:
        made.append(make_stack(total_bars))
        return made[-1].start()

    yield factory
    for stack in made:
        stack.remove()


def test_n_bars_give_n_stored_bars_and_n_predictions(stack_factory):
    total = 400
    stack = stack_factory(total)
    stack.wait_running(AUTOSTART)
    rec = Recorder(stack)
    try:
        rec.until(lambda: len(rec.bar_ts) == total and len(rec.predicted) == total,
                  what="every bar and prediction")
        assert rec.predicted == rec.bar_ts                   # exactly one per bar, in order
        history = stack.status("history")["symbols"][SYMBOL]
        assert history["window"] == PAST + total
        predictor = stack.status("predictor")
        assert predictor["model_error"] is None and predictor["inference"]["n"] > 0
    finally:
        rec.close()
    stack.shutdown()
    store = BarStore(stack.var / "data" / "market")           # durable, read back from disk
    assert store.count(SYMBOL) == PAST + total
    store.close()


def test_kill_9_history_and_predictor_mid_replay(stack_factory):
    total = 1100
    stack = stack_factory(total)
    stack.wait_running(AUTOSTART)
    rec = Recorder(stack)
    try:
        rec.until(lambda: len(rec.bar_ts) > 200, what="replay under way")
        history_pid = stack.pids()["history"]
        os.kill(history_pid, signal.SIGKILL)
        rec.until(lambda: len(rec.bar_ts) > 450, what="replay going on without history")
        predictor_pid = stack.pids()["predictor"]
        killed_at = rec.bar_ts[-1]
        os.kill(predictor_pid, signal.SIGKILL)
        rec.until(lambda: len(rec.bar_ts) == total, what="replay end")
        rec.until(lambda: rec.predicted and rec.predicted[-1] == rec.bar_ts[-1],
                  what="the predictor to catch up")
        stack.wait_running(["history", "predictor"])    # RUNNING once past startsecs
        pids = stack.pids()
        assert pids["history"] != history_pid and pids["predictor"] != predictor_pid
        # No bar predicted twice. After the kill: the old process's last predictions (for bars
        # it saw before SIGKILL landed), one gap while it restarted, then every bar to the end.
        assert len(rec.predicted) == len(set(rec.predicted))
        index = {t: i for i, t in enumerate(rec.bar_ts)}
        after = [index[t] for t in rec.predicted if t > killed_at]
        breaks = [i for i in range(1, len(after)) if after[i] != after[i - 1] + 1]
        assert len(breaks) <= 1, f"predictions resumed and stopped again: {breaks}"
        assert after[-1] == len(rec.bar_ts) - 1
        assert len(after) - (breaks[0] if breaks else 0) > 100   # the new process went on
        wait_until(lambda: stack.status("history")["symbols"][SYMBOL]["window"] == PAST + total,
                   what="history to hold every bar again")
    finally:
        rec.close()
    stack.shutdown()
    store = BarStore(stack.var / "data" / "market")
    assert store.count(SYMBOL) == PAST + total                # no closed bar lost
    store.close()
