"""Market data to predictions under the real supervisord: replay → bot → bars → history
(durable) and predictor → predictions; kill -9 of history and of the predictor mid-replay."""

from __future__ import annotations

import os
import signal

import pytest

from shared.bus import Subscriber
from shared.feeds import ensure_sample_data, read_ohlcv
from shared.market import Bar
from shared.store import BarStore
from shared.train_job import train
from tests.helpers import wait_until
from tests.stack import AUTOSTART, Stack

SYMBOL = "BTC/USDT"
PRELOADED = 100          # bars already in the store: the predictor's warm-up window


def make_stack(total_bars: int) -> Stack:
    stack = Stack(BDT_MARKET__SAMPLE_BARS=str(total_bars),
                  BDT_MARKET__REPLAY_SPEED="6000",          # a 1m bar every 10 ms
                  BDT_BOT__WAIT_SUBSCRIBERS="3",             # history, predictor and this test
                  BDT_MODEL__TRAIN_BARS="3000", BDT_MODEL__MIN_TRAIN_BARS="500")
    sample = read_ohlcv(ensure_sample_data(stack.cfg, SYMBOL))
    store = BarStore(stack.var / "data" / "market")
    store.insert(Bar(SYMBOL, *row) for row in sample.head(PRELOADED).iter_rows())
    store.close()
    train(stack.cfg)
    return stack


class Recorder:
    """Subscribes to predictions first, then to bars: the bot waits for this third bar
    subscriber, so nothing is published before both subscriptions are in place."""

    def __init__(self, stack: Stack) -> None:
        self.predictions = Subscriber(["predictions"], stack.cfg)
        wait_until(lambda: stack.status("predictor")["prediction_subscribers"] >= 1,
                   what="the predictions subscription")
        self.bars = Subscriber(["bars"], stack.cfg)
        self.bar_ts: list[int] = []
        self.predicted: list[int] = []

    def drain(self) -> None:
        while (msg := self.bars.receive(timeout_ms=0)) is not None:
            self.bar_ts.append(msg.fields["ts"])
        while (msg := self.predictions.receive(timeout_ms=0)) is not None:
            assert set(msg.fields) >= {"expected_return", "p_up", "volatility",
                                       "model_version", "bar_time"}
            assert 0 <= msg.fields["p_up"] <= 1 and msg.fields["volatility"] > 0
            self.predicted.append(msg.fields["bar_time"])

    def until(self, predicate, timeout: float = 60, what: str = "") -> None:
        def check():
            self.drain()
            return predicate()
        wait_until(check, timeout=timeout, interval=0.02, what=what)

    def close(self) -> None:
        self.predictions.close()
        self.bars.close()


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
        rec.until(lambda: len(rec.bar_ts) == total - PRELOADED and
                  len(rec.predicted) == total - PRELOADED, what="every bar and prediction")
        assert rec.predicted == rec.bar_ts                   # exactly one per bar, in order
        history = stack.status("history")["symbols"][SYMBOL]
        assert history["window"] == total
        predictor = stack.status("predictor")
        assert predictor["model_error"] is None and predictor["inference"]["n"] > 0
    finally:
        rec.close()
    stack.shutdown()
    store = BarStore(stack.var / "data" / "market")           # durable, read back from disk
    assert store.count(SYMBOL) == total
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
        rec.until(lambda: len(rec.bar_ts) == total - PRELOADED, what="replay end")
        rec.until(lambda: rec.predicted and rec.predicted[-1] == rec.bar_ts[-1],
                  what="the predictor to catch up")
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
        wait_until(lambda: stack.status("history")["symbols"][SYMBOL]["window"] == total,
                   what="history to hold every bar again")
    finally:
        rec.close()
    stack.shutdown()
    store = BarStore(stack.var / "data" / "market")
    assert store.count(SYMBOL) == total                       # no closed bar lost
    store.close()
