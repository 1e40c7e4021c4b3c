"""The predictor as a real process: no model → an error in status and no prediction at all;
a version promoted while it runs → hot reload without missing a bar; a corrupt version →
refused with a clear error, the old model kept."""

from __future__ import annotations

import pytest

from shared.bus.client import BusClient, wait_for
from shared.bus.streams import Publisher, Subscriber
from shared.config import load_config
from shared.market.bars import Bar
from shared.market.synthetic import SyntheticMarket
from shared.models.artifacts import ModelError
from shared.models.fitting import train_and_register
from shared.models.registry import ModelRegistry
from shared.storage.bar_store import BarStore
from tests.helpers import start_module, stop_process, wait_until

SYMBOL = "BTC/USDT"
M = 60_000


@pytest.fixture
def setup(var_dir):
    frame = SyntheticMarket(SYMBOL, M, seed=3).frame(1200)
    bars = [Bar(SYMBOL, *row) for row in frame.iter_rows()]
    store = BarStore(var_dir / "data" / "market")
    store.insert(bars[:1000])                         # history for the warm-up
    store.close()
    env = {"BDT_MODEL__RELOAD_CHECK_S": "0.2"}
    cfg = load_config({"BDT_VAR": str(var_dir), **env})
    procs = [start_module("services.history", var_dir, **env)]
    wait_for("history", cfg)
    procs.append(start_module("services.predictor", var_dir, **env))
    wait_for("predictor", cfg)
    pub = Publisher("bot", cfg)                        # this test stands in for the bot
    sub = Subscriber(["predictions"], cfg)
    yield cfg, frame, bars[1000:], pub, sub
    pub.close()
    sub.close()
    for proc in reversed(procs):
        assert stop_process(proc) == 0


def status(cfg) -> dict:
    with BusClient("predictor", cfg) as client:
        return client.call("status")


def send(pub, sub, bar: Bar) -> dict | None:
    pub.publish("bars", bar.to_dict())
    msg = sub.receive(timeout_ms=1500)
    return None if msg is None else msg.fields


def test_no_model_then_hot_reload_then_a_corrupt_version_is_refused(setup):
    cfg, frame, fresh, pub, sub = setup
    wait_until(lambda: pub.subscribers("bars") >= 2 and
               status(cfg)["prediction_subscribers"] >= 1, what="subscriptions")
    s = status(cfg)
    assert s["model_version"] is None and "no version promoted yet" in s["model_error"]
    assert send(pub, sub, fresh[0]) is None                   # never a made-up prediction
    wait_until(lambda: status(cfg)["bars_without_prediction"] == 1, what="the bar to be seen")
    with BusClient("predictor", cfg) as client, pytest.raises(Exception, match="no version"):
        client.call("predict")

    registry = ModelRegistry(cfg.model_dir)
    good = train_and_register(frame.head(1000), registry)     # promoted while running
    wait_until(lambda: status(cfg)["model_version"] == good, what="hot reload")
    got = send(pub, sub, fresh[1])
    assert got is not None and got["bar_time"] == fresh[1].ts and got["model_version"] == good

    bad = train_and_register(frame.head(1000), registry, promote=False)
    (cfg.model_dir / "versions" / bad / "ridge.json").write_text('{"mean": [1, 2')
    with pytest.raises(ModelError, match="ridge.json is corrupt"):
        registry.promote(bad)                                # the registry refuses it …
    (cfg.model_dir / "CURRENT").write_text(bad)              # … so: damage after promotion
    wait_until(lambda: status(cfg)["model_error"] is not None, what="the corrupt version")
    s = status(cfg)
    assert bad in s["model_error"] and "ridge.json" in s["model_error"]
    assert s["model_version"] == good                         # the old model stays in use
    got = send(pub, sub, fresh[2])
    assert got is not None and got["model_version"] == good
