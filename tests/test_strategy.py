"""Strategy rules on hand-computed numbers. Boundary cases use powers of two so that the
arithmetic is exact in binary floating point and "exactly at the threshold" really is."""

import math
from dataclasses import asdict, replace

import pytest

from shared.config import load_config
from shared.market.bars import Bar
from shared.trading.lots import floor_to_step
from shared.trading.strategy import StrategyParams, decide
from shared.trading.types import Position, Prediction

SYM = "BTC/USDT"
M = 60_000
THR = 2**-12            # entry_threshold 0.000244140625
COST = 2**-13           # cost per side; round trip 2**-12
VOL = 2**-10            # per-bar σ
MARGIN = 2**-5          # p_up_margin 0.03125 → long p_up ≥ 0.53125, short p_up ≤ 0.46875
P = StrategyParams(entry_threshold=THR, p_up_margin=MARGIN, allow_short=False,
                   vol_target=0.0005, max_hold_bars=30, stop_vol_multiple=4.0,
                   qty_step=0.00001)
P_SHORT = replace(P, allow_short=True)
ER_AT = 2**-11          # er − 2·COST = 2**-12 = THR exactly
UP, DOWN = math.inf, -math.inf


def bar(close: float = 50_000.0, ts: int = 10 * M) -> Bar:
    return Bar(SYM, ts, close, close, close, close, 1.0)


def pred(er: float, p_up: float, vol: float = VOL, ts: int = 10 * M) -> Prediction:
    return Prediction(SYM, ts, er, p_up, vol, "v1")


FLAT = Position(SYM)


def flat(er: float, p_up: float, params: StrategyParams = P, equity: float = 10_000.0,
         close: float = 50_000.0, vol: float = VOL):
    return decide(bar(close), pred(er, p_up, vol), FLAT, equity, params, COST, M)


def test_from_config_mirrors_defaults():
    p = StrategyParams.from_config(load_config({}))
    assert p == StrategyParams(entry_threshold=0.0002, p_up_margin=0.02, allow_short=False,
                               vol_target=0.0005, max_hold_bars=30, stop_vol_multiple=6.0,
                               qty_step=0.00001)


@pytest.mark.parametrize("kw", [{"qty_step": 0.0}, {"vol_target": -1.0},
                                {"p_up_margin": 0.5}, {"max_hold_bars": 0},
                                {"entry_threshold": float("nan")}, {"allow_short": 1},
                                {"stop_vol_multiple": 0.0}])
def test_bad_params_refused(kw):
    with pytest.raises(ValueError, match=f"strategy.{next(iter(kw))}"):
        StrategyParams(**{**asdict(P), **kw})


def test_no_prediction_holds():
    held = Position(SYM, qty=0.5, avg_price=100.0, opened_ts=0)
    for position in (FLAT, held):
        intent = decide(bar(), None, position, 10_000.0, P, COST, M)
        assert (intent.target_qty, intent.reason) == (position.qty, "no prediction: hold")


# ---- entry: threshold, p_up margin, short only when allowed ----

@pytest.mark.parametrize(("er", "enters"), [
    (math.nextafter(ER_AT, DOWN), False),
    (ER_AT, False),                      # er_net == threshold: must be strictly above
    (math.nextafter(ER_AT, UP), True),
    (0.01, True),
])
def test_long_entry_threshold_boundary(er, enters):
    intent = flat(er, 0.6)
    assert (intent.target_qty > 0) is enters
    if not enters:
        assert intent.target_qty == 0.0
        assert intent.reason.startswith("no edge: er ")
        assert "≤ 0.00024" in intent.reason


def test_long_entry_reason_and_tags():
    intent = flat(0.001, 0.6)
    # 10000 × 0.0005 / 2**-10 / 50000 = 0.1024
    assert intent.target_qty == 0.1024
    assert intent.reason.startswith("long: er_net 0.00076 > 0.00024, p_up 0.6000 ≥ 0.5312")
    assert intent.tags["er_net"] == pytest.approx(0.001 - 2**-12, abs=1e-18)
    assert (intent.tags["p_up"], intent.tags["vol"], intent.tags["bars_held"]) == \
        (0.6, VOL, None)
    assert intent.order_type == "market"


@pytest.mark.parametrize(("p_up", "enters"), [
    (math.nextafter(0.5 + MARGIN, DOWN), False),
    (0.5 + MARGIN, True),                # p_up ≥ 0.5 + margin: inclusive
    (math.nextafter(0.5 + MARGIN, UP), True),
])
def test_long_entry_p_up_margin_boundary(p_up, enters):
    intent = flat(0.01, p_up)
    assert (intent.target_qty > 0) is enters
    if not enters:
        assert intent.reason == "no edge: p_up 0.5312 < 0.5312"   # 4 d.p. rounding


def test_no_edge_reason_has_the_numbers():
    p = replace(P, entry_threshold=0.0002)
    intent = decide(bar(), pred(0.00012, 0.6), FLAT, 10_000.0, p, 0.00015, M)
    assert intent.target_qty == 0.0
    assert intent.reason == "no edge: er 0.00012 − costs 0.00030 ≤ 0.00020"


@pytest.mark.parametrize(("er", "enters"), [
    (-math.nextafter(ER_AT, DOWN), False),
    (-ER_AT, False),
    (-math.nextafter(ER_AT, UP), True),
])
def test_short_entry_threshold_boundary(er, enters):
    intent = flat(er, 0.4, params=P_SHORT)
    assert (intent.target_qty < 0) is enters
    assert intent.target_qty == (-0.1024 if enters else 0.0)


@pytest.mark.parametrize(("p_up", "enters"), [
    (math.nextafter(0.5 - MARGIN, DOWN), True),
    (0.5 - MARGIN, True),                # p_up ≤ 0.5 − margin: inclusive
    (math.nextafter(0.5 - MARGIN, UP), False),
])
def test_short_entry_p_up_margin_boundary(p_up, enters):
    intent = flat(-0.01, p_up, params=P_SHORT)
    assert (intent.target_qty < 0) is enters
    if not enters:
        assert intent.reason.startswith("no edge: p_up 0.4688 > 0.4688")


def test_short_only_when_allowed():
    intent = flat(-0.01, 0.4, params=P)
    assert intent.target_qty == 0.0
    assert intent.reason.startswith("no edge: short signal ignored (allow_short false)")
    assert flat(-0.01, 0.4, params=P_SHORT).target_qty == -0.1024


def test_strong_er_with_wrong_p_up_does_not_enter():
    assert flat(0.01, 0.4, params=P_SHORT).target_qty == 0.0    # er up, p_up says down
    assert flat(-0.01, 0.6, params=P_SHORT).target_qty == 0.0


# ---- sizing ----

def test_size_to_vol_target_rounded_down():
    # 10000 × 0.0005 / 0.001 / 30000 = 0.1666666… → 0.16666 (down, not 0.16667)
    assert flat(0.01, 0.6, close=30_000.0, vol=0.001).target_qty == 0.16666
    assert floor_to_step(0.3, 0.1) == 0.3               # no float-division step loss
    assert floor_to_step(0.29999, 0.1) == 0.2
    assert floor_to_step(1e-5, 1e-5) == 1e-5
    assert floor_to_step(-1.0, 1e-5) == 0.0
    assert floor_to_step(float("nan"), 1e-5) == 0.0


def test_size_rounding_to_zero_boundary():
    p = replace(P, qty_step=0.001)
    # 100 × 0.0005 / 0.001 / 50000 = 0.001: exactly one step
    one = flat(0.01, 0.6, params=p, equity=100.0, vol=0.001)
    assert one.target_qty == 0.001
    zero = flat(0.01, 0.6, params=p, equity=math.nextafter(100.0, DOWN), vol=0.001)
    assert zero.target_qty == 0.0
    assert zero.reason.startswith("size rounds to zero")
    assert flat(0.01, 0.6, params=p, equity=0.0, vol=0.001).target_qty == 0.0
    assert flat(0.01, 0.6, params=p, equity=-5.0, vol=0.001).target_qty == 0.0


# ---- in a position: stop, time limit, opposite signal, hold ----

LONG = Position(SYM, qty=0.1, avg_price=128.0, opened_ts=0)
SHORT = Position(SYM, qty=-0.1, avg_price=128.0, opened_ts=0)
# stop_at = 4 × 2**-10 = 2**-8 → long stops below 128 × (1 − 2**-8) = 127.5, short above 128.5


def held(position: Position, close: float, er: float = 0.0, p_up: float = 0.5,
         ts: int = 10 * M, params: StrategyParams = P):
    return decide(bar(close, ts), pred(er, p_up, ts=ts), position, 10_000.0, params, COST, M)


@pytest.mark.parametrize(("close", "stops"), [
    (math.nextafter(127.5, UP), False),
    (127.5, False),                      # adverse == 4σ exactly: must exceed
    (math.nextafter(127.5, DOWN), True),
    (100.0, True),
])
def test_long_stop_boundary(close, stops):
    intent = held(LONG, close)
    assert intent.target_qty == (0.0 if stops else 0.1)
    assert intent.reason.startswith("stop:" if stops else "hold position")


@pytest.mark.parametrize(("close", "stops"), [
    (128.5, False),
    (math.nextafter(128.5, UP), True),
    (200.0, True),
])
def test_short_stop_boundary(close, stops):
    intent = held(SHORT, close, params=P_SHORT)
    assert intent.target_qty == (0.0 if stops else -0.1)
    assert intent.reason.startswith("stop:" if stops else "hold position")


def test_stop_ignores_favourable_moves():
    assert held(LONG, 200.0).target_qty == 0.1
    assert held(SHORT, 64.0, params=P_SHORT).target_qty == -0.1


@pytest.mark.parametrize(("ts", "exits"), [
    (29 * M, False),
    (30 * M - 1, False),                 # 29.99 bars held
    (30 * M, True),                      # 30 bars ≥ max_hold_bars
    (31 * M, True),
])
def test_time_limit_boundary(ts, exits):
    intent = held(LONG, 128.0, ts=ts)
    assert intent.target_qty == (0.0 if exits else 0.1)
    assert intent.tags["bars_held"] == ts // M
    if exits:
        assert intent.reason == f"time limit: held {ts // M} bars ≥ 30"


def test_unknown_entry_time_skips_time_limit():
    pos = Position(SYM, qty=0.1, avg_price=128.0, opened_ts=None)
    intent = held(pos, 128.0, ts=1000 * M)
    assert intent.target_qty == 0.1 and intent.tags["bars_held"] is None


def test_exit_rules_priority():
    # stop beats time limit; time limit beats opposite signal
    assert held(LONG, 100.0, ts=40 * M).reason.startswith("stop:")
    assert held(LONG, 128.0, er=-0.01, p_up=0.4, ts=40 * M).reason.startswith("time limit")


def test_opposite_signal_exits_to_flat_even_without_shorting():
    intent = held(LONG, 128.0, er=-0.01, p_up=0.4)            # P: allow_short false
    assert intent.target_qty == 0.0 and intent.reason.startswith("opposite signal: short")
    intent = held(SHORT, 128.0, er=0.01, p_up=0.6, params=P_SHORT)
    assert intent.target_qty == 0.0 and intent.reason.startswith("opposite signal: long")
    # exits to flat, never flips in one step
    assert held(LONG, 128.0, er=-0.01, p_up=0.4, params=P_SHORT).target_qty == 0.0


@pytest.mark.parametrize(("er", "exits"), [
    (-ER_AT, False),                     # short er_net exactly at the threshold: no signal
    (-math.nextafter(ER_AT, UP), True),
])
def test_opposite_signal_boundary(er, exits):
    intent = held(LONG, 128.0, er=er, p_up=0.4)
    assert intent.target_qty == (0.0 if exits else 0.1)


def test_same_direction_signal_holds_without_adding():
    intent = held(LONG, 128.0, er=0.01, p_up=0.6)
    assert intent.target_qty == 0.1 and intent.reason.startswith("hold position")
    assert intent.tags["bars_held"] == 10 and intent.tags["vol"] == VOL
    assert intent.tags["er_net"] == pytest.approx(0.01 - 2**-12, abs=1e-18)


def test_prediction_for_another_symbol_holds():
    p = Prediction("ETH/USDT", 10 * M, 0.01, 0.6, VOL, "v1")
    intent = decide(bar(), p, FLAT, 10_000.0, P, COST, M)
    assert intent.target_qty == 0.0 and "ETH/USDT" in intent.reason


def test_without_a_prediction_stops_and_time_limits_still_fire():
    """A dead predictor must not disable the exits: the last known volatility measures the stop."""
    params = StrategyParams(entry_threshold=0.0002, p_up_margin=0.02, allow_short=False,
                            vol_target=0.0005, max_hold_bars=30, stop_vol_multiple=6.0,
                            qty_step=0.00001)
    pos = Position("BTC/USDT", qty=0.5, avg_price=100.0, opened_ts=0)
    down = Bar("BTC/USDT", 60_000, 93.0, 93.0, 93.0, 93.0, 1.0)
    intent = decide(down, None, pos, 10_000.0, params, 0.0005, 60_000, fallback_volatility=0.01)
    assert intent.target_qty == 0.0 and intent.reason.startswith("no prediction: stop")
    late = Bar("BTC/USDT", 30 * 60_000, 100.0, 100.0, 100.0, 100.0, 1.0)
    intent = decide(late, None, pos, 10_000.0, params, 0.0005, 60_000, fallback_volatility=0.01)
    assert intent.target_qty == 0.0 and "time limit" in intent.reason
    calm = Bar("BTC/USDT", 60_000, 99.0, 99.0, 99.0, 99.0, 1.0)
    assert decide(calm, None, pos, 10_000.0, params, 0.0005, 60_000,
                  fallback_volatility=0.01).target_qty == 0.5
    assert decide(down, None, pos, 10_000.0, params, 0.0005, 60_000).target_qty == 0.5


def test_to_step_without_a_step_leaves_the_value():
    """A market without a lot or tick rule (step 0): the value as it is, no division by zero;
    the callers need no guard of their own."""
    from shared.trading.lots import to_step

    assert to_step(0.123456789, 0.0) == 0.123456789
    assert to_step(0.123456789, 0.0, up=True) == 0.123456789
    assert to_step(-1.0, 0.0) == 0.0 and to_step(0.3, 0.1) == 0.3
