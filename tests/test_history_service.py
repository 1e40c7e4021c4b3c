"""history and bot as real processes: every published bar ends up stored, even across a
kill -9 of history mid-replay (the gap is backfilled from the bot's recent bars)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from shared.bus.client import BadRequest, BusClient, wait_for
from shared.storage.bar_store import BarStore
from tests.helpers import start_module, stop_process, wait_until

N = 600


@pytest.fixture
def env():
    # 600 one-minute bars at 6000x: one bar every 10 ms, six seconds in all
    return {"BDT_MARKET__SAMPLE_BARS": str(N), "BDT_MARKET__REPLAY_SPEED": "6000",
            "BDT_BOT__WAIT_SUBSCRIBERS": "1", "BDT_HISTORY__COMPACT_INTERVAL_S": "1",
            "BDT_HISTORY__COMPACT_KEEP_DAYS": "0",
            "BDT_BOT__PREDICTION_WAIT_MS": "1"}          # no predictor here: do not wait for one


def status(cfg, name: str) -> dict:
    with BusClient(name, cfg, timeout_ms=1000) as client:
        return client.call("status")


def test_kill_9_history_mid_replay_loses_no_closed_bar(cfg, var_dir, env):
    history = start_module("services.history", var_dir, **env)
    bot = None
    try:
        wait_for("history", cfg)
        bot = start_module("services.bot", var_dir, **env)
        wait_until(lambda: status(cfg, "bot")["bars_published"] > 100, timeout=20,
                   what="replay under way")
        os.kill(history.pid, signal.SIGKILL)
        history.wait()
        time.sleep(0.5)                                     # bars go on being published
        history = start_module("services.history", var_dir, **env)
        wait_for("history", cfg)
        wait_until(lambda: status(cfg, "bot")["feed_finished"], timeout=30, what="replay end")
        wait_until(lambda: status(cfg, "history")["symbols"]["BTC/USDT"]["window"] == N,
                   timeout=10, what="history to hold every bar")
        after = status(cfg, "history")
        assert after["backfilled"] > 0                       # the gap was closed from the bot
        with BusClient("history", cfg) as client:
            got = client.call("range", symbol="BTC/USDT", start=0, end=2**62)
            assert len(got["ts"]) == N and got["truncated"] is False
            assert got["ts"] == sorted(set(got["ts"]))
            latest = client.call("latest", symbol="BTC/USDT", n=3)
            assert latest["ts"] == got["ts"][-3:]
            with pytest.raises(BadRequest, match="unknown symbol"):
                client.call("latest", symbol="DOGE/USDT", n=1)
    finally:
        for proc in (bot, history):
            if proc is not None:
                assert stop_process(proc) == 0
    store = BarStore(var_dir / "data" / "market")            # durable: read back from disk
    assert store.count("BTC/USDT") == N
    store.close()
