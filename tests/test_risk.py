"""Risk rules, each on its own, at its boundary and one step either side."""

import json
import math
from dataclasses import asdict, replace

import pytest

from shared.config import load_config
from shared.market.bars import Bar, utc
from shared.trading.risk import RiskLimits, RiskManager, RiskState, utc_day
from shared.trading.types import Intent, Position, Prediction

SYM = "BTC/USDT"
M = 60_000
DAY0 = 1_704_067_200_000            # 2024-01-01T00:00:00Z
DAY1 = DAY0 + 86_400_000
UP, DOWN = math.inf, -math.inf
LIM = RiskLimits(max_position_qty=1.0, max_notional=50_000.0, daily_loss_limit=500.0,
                 max_drawdown=0.10, max_prediction_age_s=5.0, losses_before_cooldown=3,
                 cooldown_bars=10)


def bar(ts: int = DAY0 + 60 * M, close: float = 10_000.0) -> Bar:
    return Bar(SYM, ts, close, close, close, close, 1.0)


def pred(ts: int = DAY0 + 60 * M, version: str = "v1", symbol: str = SYM) -> Prediction:
    return Prediction(symbol, ts, 0.001, 0.6, 0.001, version)


def manager(equity: float = 10_000.0, ts: int = DAY0 + 60 * M, **kw) -> RiskManager:
    rm = RiskManager(LIM, RiskState(), M, **kw)
    rm.on_bar(bar(ts), equity)
    return rm


def review(rm: RiskManager, target: float, current: float = 0.0, *, ts: int = DAY0 + 60 * M,
           close: float = 10_000.0, prediction: Prediction | None | str = "default",
           age: float = 1.0, version: str | None = "v1", equity: float = 10_000.0):
    p = pred(ts) if prediction == "default" else prediction
    position = Position(SYM, qty=current, avg_price=close if current else 0.0,
                        opened_ts=ts if current else None)
    return rm.review(Intent(target, "strategy says so"), position=position, bar=bar(ts, close),
                     prediction=p, prediction_age_s=age, expected_model_version=version,
                     equity=equity)


def test_from_config_mirrors_defaults():
    assert RiskLimits.from_config(load_config({})) == replace(LIM, max_position_qty=0.0)


@pytest.mark.parametrize("kw", [{"max_position_qty": -1.0}, {"max_notional": float("inf")},
                                {"max_drawdown": 1.0}, {"max_drawdown": 0.0},
                                {"losses_before_cooldown": 0}, {"cooldown_bars": 1.5},
                                {"daily_loss_limit": -1.0}, {"max_prediction_age_s": True}])
def test_bad_limits_refused(kw):
    with pytest.raises(ValueError, match=f"risk.{next(iter(kw))}"):
        RiskLimits(**{**asdict(LIM), **kw})


def test_clean_open_passes_unchanged():
    rm = manager()
    intent = Intent(0.5, "long")
    approved, reasons = rm.review(intent, position=Position(SYM), bar=bar(), prediction=pred(),
                                  prediction_age_s=1.0, expected_model_version="v1",
                                  equity=10_000.0)
    assert approved is intent and reasons == []


# ---- blocking rules ----

def test_pause_blocks_opening_and_resume_allows():
    rm = manager()
    rm.pause()
    intent, reasons = review(rm, 0.5)
    assert intent.target_qty == 0.0 and reasons == ["paused by operator"]
    assert "risk: paused by operator" in intent.reason
    assert intent.tags["risk"] == ["paused by operator"]
    rm.resume()
    assert review(rm, 0.5) == (Intent(0.5, "strategy says so"), [])


def test_pause_blocks_increase_and_keeps_the_current_qty():
    rm = manager()
    rm.pause()
    assert review(rm, 0.8, current=0.5)[0].target_qty == 0.5
    assert review(rm, -0.8, current=-0.5)[0].target_qty == -0.5


def test_blocked_flip_keeps_its_reducing_part():
    rm = manager()
    rm.pause()
    assert review(rm, -0.3, current=0.5)[0].target_qty == 0.0
    assert review(rm, 0.3, current=-0.5)[0].target_qty == 0.0
    rm.resume()
    assert review(rm, -0.3, current=0.5) == (Intent(-0.3, "strategy says so"), [])


@pytest.mark.parametrize(("equity", "killed"), [
    (math.nextafter(9_000.0, UP), False),
    (9_000.0, True),                     # (10000 − 9000) / 10000 == 0.10 exactly
    (math.nextafter(9_000.0, DOWN), True),
])
def test_kill_switch_at_exactly_max_drawdown(equity, killed):
    rm = manager(10_000.0)
    rm.on_bar(bar(DAY0 + 61 * M), equity)
    assert rm.state.killed is killed
    if killed:
        assert rm.state.kill_reason.startswith("drawdown 0.1000 ≥ max_drawdown 0.1000 "
                                               "(equity 9000.00, peak 10000.00)")


def test_kill_switch_flattens_and_stays_until_operator_resets():
    rm = manager(10_000.0)
    rm.on_bar(bar(DAY0 + 61 * M), 8_000.0)
    assert rm.state.killed
    ts = DAY0 + 62 * M
    rm.on_bar(bar(ts), 12_000.0)                       # recovery does not clear it
    assert rm.state.killed and rm.state.peak_equity == 12_000.0
    for target, current in [(0.5, 0.0), (0.5, 0.5), (0.2, 0.5), (-0.5, -0.5), (1.0, 0.5)]:
        intent, reasons = review(rm, target, current, ts=ts)
        assert intent.target_qty == 0.0
        assert reasons[0].startswith("kill switch: flatten (drawdown 0.2000")
    assert review(rm, 0.0, 0.5, ts=ts) == (Intent(0.0, "strategy says so"), [])
    rm.reset_kill()
    assert not rm.state.killed and rm.state.kill_reason == ""
    rm.on_bar(bar(DAY0 + 63 * M), 8_000.0)             # the peak restarts from here
    assert not rm.state.killed and rm.state.peak_equity == 8_000.0
    # no longer killed; today's 2000 loss still blocks opening until the next UTC day
    assert review(rm, 0.5, ts=DAY0 + 63 * M, equity=8_000.0)[1] == \
        ["daily loss limit: lost 2000.00 (limit 500.00) today; no new positions until the "
         "next UTC day"]
    rm.on_bar(bar(DAY1), 8_000.0)
    assert review(rm, 0.5, ts=DAY1, equity=8_000.0)[1] == []


@pytest.mark.parametrize(("equity", "blocked"), [
    (math.nextafter(9_500.0, UP), False),
    (9_500.0, True),                     # lost exactly 500
    (math.nextafter(9_500.0, DOWN), True),
])
def test_daily_loss_limit(equity, blocked):
    rm = manager(10_000.0)
    intent, reasons = review(rm, 0.5, equity=equity)
    assert intent.target_qty == (0.0 if blocked else 0.5)
    if blocked:
        assert reasons == [f"daily loss limit: lost {10_000.0 - equity:.2f} (limit 500.00) "
                           "today; no new positions until the next UTC day"]


def test_daily_loss_limit_stays_hit_until_the_next_day_even_if_equity_recovers():
    rm = manager(10_000.0)
    assert review(rm, 0.5, equity=9_400.0)[0].target_qty == 0.0
    assert rm.state.day_loss_hit
    assert review(rm, 0.5, equity=10_100.0)[0].target_qty == 0.0   # recovered: still blocked
    assert RiskState.from_dict(rm.state.to_dict()).day_loss_hit      # and it survives a restart


def test_day_roll_resets_the_daily_loss():
    rm = manager(10_000.0, ts=DAY1 - M)                # last bar of 2024-01-01
    assert rm.state.day == "2024-01-01"
    assert review(rm, 0.5, ts=DAY1 - M, equity=9_400.0)[0].target_qty == 0.0
    rm.on_bar(bar(DAY1), 9_400.0)                      # first bar of 2024-01-02
    assert (rm.state.day, rm.state.day_start_equity) == ("2024-01-02", 9_400.0)
    assert review(rm, 0.5, ts=DAY1, equity=9_400.0)[0].target_qty == 0.5
    rm.on_bar(bar(DAY1 + M), 9_300.0)                  # same day: start equity unchanged
    assert rm.state.day_start_equity == 9_400.0


def test_review_before_on_bar_for_the_day_blocks_opening():
    rm = manager(10_000.0, ts=DAY1 - M)
    intent, reasons = review(rm, 0.5, ts=DAY1)
    assert intent.target_qty == 0.0
    assert reasons == ["risk state not rolled to 2024-01-02 (on_bar not called)"]
    assert review(rm, 0.0, current=0.5, ts=DAY1)[1] == []   # exits still go through


def test_cooldown_after_consecutive_losses_and_its_expiry():
    rm = manager()
    t = DAY0 + 100 * M
    rm.on_trade_closed(-1.0, t - 2 * M)
    rm.on_trade_closed(-1.0, t - M)
    assert rm.state.consecutive_losses == 2 and rm.state.cooldown_until_ts == 0
    rm.on_trade_closed(-1.0, t)                        # third loss → cooldown, count restarts
    assert rm.state.consecutive_losses == 0
    assert rm.state.cooldown_until_ts == t + 10 * M
    for ts, blocked in [(t, True), (t + 9 * M, True), (t + 10 * M - 1, True),
                        (t + 10 * M, False), (t + 11 * M, False)]:
        intent, reasons = review(rm, 0.5, ts=ts)
        assert (intent.target_qty == 0.0) is blocked, ts
        if blocked:
            assert reasons == [f"cooldown after losses: until {utc(t + 10 * M)}"]


def test_a_win_resets_the_loss_count():
    rm = manager()
    for pnl in (-1.0, -1.0, 0.5, -1.0, -1.0):
        rm.on_trade_closed(pnl, DAY0)
    assert rm.state.consecutive_losses == 2 and rm.state.cooldown_until_ts == 0
    rm.on_trade_closed(0.0, DAY0)                      # break-even is not a loss
    assert rm.state.consecutive_losses == 0
    with pytest.raises(ValueError):
        rm.on_trade_closed(float("nan"), DAY0)


@pytest.mark.parametrize(("age", "blocked"), [
    (math.nextafter(5.0, DOWN), False),
    (5.0, False),                        # at the limit: still fresh
    (math.nextafter(5.0, UP), True),
    (float("nan"), True),
])
def test_stale_prediction(age, blocked):
    intent, reasons = review(manager(), 0.5, age=age)
    assert intent.target_qty == (0.0 if blocked else 0.5)
    if blocked:
        assert reasons == [f"stale prediction: age {age} s > 5.0 s"]


@pytest.mark.parametrize("offset", [-M, -1, 1, M])
def test_prediction_for_another_bar(offset):
    ts = DAY0 + 60 * M
    intent, reasons = review(manager(), 0.5, prediction=pred(ts + offset))
    assert intent.target_qty == 0.0
    assert reasons == [f"prediction for another bar (bar_time {utc(ts + offset)}, bar {utc(ts)})"]


def test_prediction_for_another_symbol():
    intent, reasons = review(manager(), 0.5, prediction=pred(symbol="ETH/USDT"))
    assert intent.target_qty == 0.0
    assert reasons == [f"prediction for another symbol (ETH/USDT, bar {SYM})"]


def test_no_prediction_blocks_opening():
    intent, reasons = review(manager(), 0.5, prediction=None)
    assert intent.target_qty == 0.0 and reasons == ["no prediction"]


def test_unexpected_model_version():
    intent, reasons = review(manager(), 0.5, version="v2")
    assert intent.target_qty == 0.0
    assert reasons == ["unexpected model version v1, expected v2"]
    assert review(manager(), 0.5, version=None)[1] == []    # no expectation: any version


def test_resource_modes():
    rm = manager()
    rm.set_mode("low_resource")
    assert review(rm, 0.5)[1] == []
    rm.set_mode("critical")
    intent, reasons = review(rm, 0.5)
    assert intent.target_qty == 0.0 and reasons == ["critical resource mode"]
    assert review(rm, 0.0, current=0.5)[1] == []
    with pytest.raises(ValueError, match="mode must be one of"):
        rm.set_mode("panic")
    assert rm.state.mode == "critical"


def test_every_applicable_block_is_reported():
    rm = manager()
    rm.pause()
    rm.set_mode("critical")
    _, reasons = review(rm, 0.5, age=9.0, version="v9")
    assert reasons == ["paused by operator", "critical resource mode",
                       "stale prediction: age 9.0 s > 5.0 s",
                       "unexpected model version v1, expected v9"]


# ---- reducing is always allowed ----

@pytest.mark.parametrize(("current", "target"), [
    (0.5, 0.0), (0.5, 0.2), (0.5, 0.5), (-0.5, 0.0), (-0.5, -0.2), (3.0, 2.0),
])
def test_reducing_is_always_allowed(current, target):
    rm = manager(10_000.0)
    rm.pause()
    rm.set_mode("critical")
    rm.on_trade_closed(-1.0, DAY0)
    rm.on_trade_closed(-1.0, DAY0)
    rm.on_trade_closed(-1.0, DAY0 + 60 * M)
    intent, reasons = review(rm, target, current, prediction=None, age=99.0, version="v9",
                             equity=9_000.01)          # daily loss hit, kill switch not
    assert (intent.target_qty, reasons) == (target, [])


# ---- clipping ----

@pytest.mark.parametrize(("target", "approved"), [
    (math.nextafter(1.0, DOWN), math.nextafter(1.0, DOWN)),
    (1.0, 1.0),
    (math.nextafter(1.0, UP), 1.0),
    (1.5, 1.0),
    (-1.5, -1.0),
])
def test_clip_by_max_position_qty(target, approved):
    intent, reasons = review(manager(), target)       # close 10000: notional cap 5.0
    assert intent.target_qty == approved
    if approved != target:
        assert reasons == [f"clipped by max_position_qty 1: |target| {abs(target):g} → 1"]


@pytest.mark.parametrize(("target", "approved"), [(0.5, 0.5), (math.nextafter(0.5, UP), 0.5),
                                                  (0.8, 0.5), (-0.8, -0.5)])
def test_clip_by_max_notional(target, approved):
    intent, reasons = review(manager(), target, close=100_000.0)   # 50000 / 100000 = 0.5
    assert intent.target_qty == approved
    if approved != target:
        assert reasons == [f"clipped by max_notional 50000.00 at close 100000.00: "
                           f"|target| {abs(target):g} → 0.5"]


def test_notional_clip_rounds_down_to_the_lot_step():
    # 50000 / 70000 = 0.714285714…
    assert review(manager(), 0.8, close=70_000.0)[0].target_qty == 50_000.0 / 70_000.0
    clipped = review(manager(qty_step=0.00001), 0.8, close=70_000.0)[0].target_qty
    assert clipped == 0.71428 and clipped * 70_000.0 <= 50_000.0


def test_clip_never_forces_a_reduction():
    rm = manager()                                     # position above the cap, e.g. limits
    assert review(rm, 2.0, current=2.0)[1] == []        # lowered: holding it is not touched
    intent, reasons = review(rm, 2.5, current=2.0)
    assert intent.target_qty == 2.0 and reasons[0].startswith("clipped by max_position_qty")
    assert review(rm, -1.5, current=2.0)[0].target_qty == -1.0   # a flip is capped in full


def test_non_finite_target_holds():
    intent, reasons = review(manager(), float("nan"), current=0.5)
    assert intent.target_qty == 0.5 and reasons == ["invalid target nan: hold"]


def test_non_finite_equity_refused():
    rm = manager()
    with pytest.raises(ValueError, match="equity"):
        rm.on_bar(bar(), float("nan"))
    with pytest.raises(ValueError, match="equity"):
        review(rm, 0.5, equity=float("inf"))


# ---- persisted state ----

def test_utc_day():
    assert utc_day(DAY0) == "2024-01-01" and utc_day(DAY1 - 1) == "2024-01-01"
    assert utc_day(DAY1) == "2024-01-02"


def test_risk_state_json_round_trip():
    rm = manager(10_000.0)
    rm.on_bar(bar(DAY0 + 61 * M), 8_500.0)
    rm.on_trade_closed(-3.0, DAY0 + 61 * M)
    rm.pause()
    rm.set_mode("low_resource")
    state = rm.state
    assert state.killed and state.consecutive_losses == 1
    again = RiskState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert RiskState.from_dict(RiskState().to_dict()) == RiskState()


GOOD = RiskState(day="2024-01-01", day_start_equity=10_000.0, peak_equity=10_500.0).to_dict()


@pytest.mark.parametrize(("change", "field"), [
    ({"day": "2024-13-01"}, "day"),
    ({"day": 20240101}, "day"),
    ({"day_start_equity": "10000"}, "day_start_equity"),
    ({"peak_equity": float("nan")}, "peak_equity"),
    ({"peak_equity": -1.0}, "peak_equity"),
    ({"consecutive_losses": 1.0}, "consecutive_losses"),
    ({"consecutive_losses": True}, "consecutive_losses"),
    ({"cooldown_until_ts": -5}, "cooldown_until_ts"),
    ({"killed": "false"}, "killed"),
    ({"paused": 0}, "paused"),
    ({"kill_reason": None}, "kill_reason"),
    ({"mode": "turbo"}, "mode"),
    ({"surprise": 1}, "surprise"),
])
def test_malformed_risk_state_names_the_field(change, field):
    with pytest.raises(ValueError, match=f"risk state field '{field}'"):
        RiskState.from_dict({**GOOD, **change})


def test_missing_risk_state_field_is_named():
    d = dict(GOOD)
    del d["peak_equity"]
    with pytest.raises(ValueError, match="risk state field 'peak_equity': missing"):
        RiskState.from_dict(d)
    with pytest.raises(ValueError, match="must be a dict"):
        RiskState.from_dict([])  # type: ignore[arg-type]


def test_state_is_usable_after_replace():
    # a RiskState the bot rebuilt from JSON drives the manager exactly like the original
    state = replace(RiskState.from_dict(GOOD), paused=True)
    rm = RiskManager(LIM, state, M)
    intent, reasons = review(rm, 0.5, ts=DAY0 + 60 * M, equity=10_000.0)
    assert intent.target_qty == 0.0 and reasons == ["paused by operator"]
