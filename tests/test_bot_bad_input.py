"""Bad input reaching the bot: malformed predictions and a corrupted state database."""

from __future__ import annotations

import pytest

from shared.bus.client import BusClient, wait_for
from shared.trading.types import Prediction
from tests.helpers import start_module, stop_process

GOOD = {"symbol": "BTC/USDT", "bar_time": 60_000, "expected_return": 0.001, "p_up": 0.6,
        "volatility": 0.001, "model_version": "v1"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"p_up": 1.5}, "p_up"),
        ({"p_up": "high"}, "p_up"),
        ({"volatility": 0.0}, "volatility"),
        ({"expected_return": float("nan")}, "expected_return"),
        ({"bar_time": "yesterday"}, "bar_time"),
        ({"bar_time": True}, "bar_time"),
        ({"model_version": ""}, "model_version"),
        ({"symbol": None}, "symbol"),
    ],
)
def test_a_malformed_prediction_is_refused_naming_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        Prediction.from_dict({**GOOD, **change})
    assert Prediction.from_dict(GOOD).p_up == 0.6


def test_a_corrupt_state_database_stops_trading_not_the_bot(cfg, var_dir):
    db = var_dir / "data" / "trading.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database, maybe a disk error" * 300)
    before = db.read_bytes()
    proc = start_module("services.bot", var_dir, BDT_BOT__WAIT_SUBSCRIBERS="0",
                        BDT_MARKET__SAMPLE_BARS="200", BDT_MODEL__TRAIN_BARS="500")
    try:
        wait_for("bot", cfg)
        with BusClient("bot", cfg) as bot:
            s = bot.call("status")
            assert "trading.db" in s["state_error"] and "untouched" in s["state_error"]
            assert s["bars_published"] == 0 and s["decisions"] == 0
            with pytest.raises(Exception, match="trading.db"):
                bot.call("trades")
    finally:
        assert stop_process(proc) == 0
    assert db.read_bytes() == before
