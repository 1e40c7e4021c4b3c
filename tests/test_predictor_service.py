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


def send(pub, sub, bar: Bar, timeout_ms: int = 1500) -> dict | None:
    """The prediction for ``bar``; None when none came, or the predictor said it skips it."""
    pub.publish("bars", bar.to_dict())
    msg = sub.receive(timeout_ms=timeout_ms)
    if msg is not None and "skipped" in msg.fields:
        SKIPS.append(msg.fields)
        return None
    return None if msg is None else msg.fields


SKIPS: list[dict] = []


def test_no_model_then_hot_reload_then_a_corrupt_version_is_refused(setup):
    cfg, frame, fresh, pub, sub = setup
    wait_until(lambda: pub.subscribers("bars") >= 2 and
               status(cfg)["prediction_subscribers"] >= 1, what="subscriptions")
    s = status(cfg)
    assert s["model_version"] is None and "no version promoted yet" in s["model_error"]
    assert send(pub, sub, fresh[0]) is None                   # never a made-up prediction
    assert SKIPS[-1]["bar_time"] == fresh[0].ts and "no model" in SKIPS[-1]["skipped"]
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


def test_a_long_gap_restarts_the_warm_up_instead_of_predicting_across_it(setup):
    """Issue 12 case 9: a replay that began 39 h after the store's last bar, 1-2% away in
    price, got a prediction at once — ret_1 of −1.6%, a volatility jump — and the bot bought
    on it. Now the first bars after a long gap get no prediction until the features are warm
    again, the gap is counted and logged, and predictions resume after the warm-up."""
    from shared.models.features import WARMUP_BARS

    cfg, frame, fresh, pub, sub = setup
    wait_until(lambda: pub.subscribers("bars") >= 2 and
               status(cfg)["prediction_subscribers"] >= 1, what="subscriptions")
    train_and_register(frame.head(1000), ModelRegistry(cfg.model_dir))
    wait_until(lambda: status(cfg)["model_version"] is not None, what="the model")
    assert send(pub, sub, fresh[0]) is not None               # continuous: predicted
    later = 39 * 60 * M                                        # 39 h without bars …
    moved = [Bar(b.symbol, b.ts + later, b.open * 0.984, b.high * 0.984, b.low * 0.984,
                 b.close * 0.984, b.volume) for b in fresh[1:WARMUP_BARS + 3]]
    for bar in moved[:WARMUP_BARS]:                            # … then no prediction at all
        assert send(pub, sub, bar, timeout_ms=50) is None
    wait_until(lambda: status(cfg)["last_bar_ts"] == moved[WARMUP_BARS - 1].ts,
               what="the warm-up bars handled")
    while (late := sub.receive(timeout_ms=200)) is not None:   # late skips, no prediction
        assert "skipped" in late.fields, late.fields
    assert "warming up" in SKIPS[-1]["skipped"]
    s = status(cfg)
    assert s["gaps"] == 1 and s["bars_without_prediction"] >= WARMUP_BARS
    got = send(pub, sub, moved[WARMUP_BARS])                   # warm again
    assert got is not None and got["bar_time"] == moved[WARMUP_BARS].ts
    log = (cfg.var_dir / "services_predictor.log").read_text()
    assert "gap of 2340 missing bars" in log


def test_critical_mode_drops_inference_and_normal_resumes_it(setup):
    """Issue 16: the predictor drops its optional work in critical mode (the bot opens nothing
    then) and predicts again, from an up-to-date state, once the mode is normal."""
    cfg, frame, fresh, pub, sub = setup
    wait_until(lambda: pub.subscribers("bars") >= 2 and
               status(cfg)["prediction_subscribers"] >= 1, what="subscriptions")
    train_and_register(frame.head(1000), ModelRegistry(cfg.model_dir))
    wait_until(lambda: status(cfg)["model_version"] is not None, what="the model")
    assert send(pub, sub, fresh[0]) is not None
    pub.publish("events", {"kind": "mode", "mode": "critical"})
    wait_until(lambda: status(cfg)["resource_mode"] == "critical", what="critical mode")
    assert send(pub, sub, fresh[1]) is None and SKIPS[-1]["skipped"] == "critical resource mode"
    pub.publish("events", {"kind": "mode", "mode": "normal"})
    wait_until(lambda: status(cfg)["resource_mode"] == "normal", what="normal mode")
    got = send(pub, sub, fresh[2])
    assert got is not None and got["bar_time"] == fresh[2].ts
