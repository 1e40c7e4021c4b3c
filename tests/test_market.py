import math

import pytest

from shared.market.bars import Bar, Trade, bars_to_columns, columns_to_bars, timeframe_ms
from shared.market.builder import BarBuilder
from shared.market.gate import BarGate, bar_problem

M = 60_000


def test_timeframe_parsing():
    assert timeframe_ms("1m") == M and timeframe_ms("15s") == 15_000
    assert timeframe_ms("1h") == 60 * M
    with pytest.raises(ValueError, match="expected N followed by s, m, h or d"):
        timeframe_ms("5x")


def test_bars_from_trades():
    b = BarBuilder("BTC/USDT", M)
    trades = [(0, 100.0, 1.0), (10_000, 105.0, 2.0), (59_999, 99.0, 0.5),   # bar 0
              (60_000, 101.0, 1.0), (90_000, 102.0, 1.0),                   # bar 1
              (185_000, 103.0, 3.0)]                                       # bar 3 (bar 2 empty)
    closed = [bar for t, p, a in trades if (bar := b.add(Trade("BTC/USDT", t, p, a)))]
    assert closed == [Bar("BTC/USDT", 0, 100.0, 105.0, 99.0, 99.0, 3.5, 3),
                      Bar("BTC/USDT", M, 101.0, 102.0, 101.0, 102.0, 2.0, 2)]
    assert b.close_due(239_999) is None
    assert b.close_due(240_000) == Bar("BTC/USDT", 3 * M, 103.0, 103.0, 103.0, 103.0, 3.0, 1)
    assert b.add(Trade("BTC/USDT", 1000, 1.0, 1.0)) is None and b.late_trades == 1


GOOD = Bar("X", 5 * M, 10.0, 11.0, 9.0, 10.5, 3.0, 1)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"close": math.nan}, "non-finite"),
        ({"high": math.inf}, "non-finite"),
        ({"low": 0.0}, "non-positive price"),
        ({"open": -1.0}, "non-positive price"),
        ({"high": 8.0}, "high 8.0 < low 9.0"),
        ({"close": 12.0}, "outside [low, high]"),
        ({"volume": -1.0}, "negative volume"),
        ({"ts": 5 * M + 1}, "not aligned"),
    ],
)
def test_bad_bars_are_rejected_with_a_reason(changes, reason):
    fields = {**GOOD.to_dict(), **changes}
    assert reason in bar_problem(Bar(**fields), M)


def test_gate_rejects_duplicates_and_time_going_backwards():
    gate = BarGate(M)
    assert gate.check(GOOD) is None
    assert "duplicate" in gate.check(GOOD)
    assert "backwards" in gate.check(Bar(**{**GOOD.to_dict(), "ts": 4 * M}))
    assert gate.check(Bar(**{**GOOD.to_dict(), "ts": 6 * M})) is None
    assert gate.rejected == 2


def test_columnar_round_trip_and_malformed():
    bars = [GOOD, Bar(**{**GOOD.to_dict(), "ts": 6 * M})]
    assert columns_to_bars(bars_to_columns("X", bars)) == bars
    cols = bars_to_columns("X", bars)
    cols["open"] = cols["open"][:1]
    with pytest.raises(ValueError, match="equal length"):
        columns_to_bars(cols)
    with pytest.raises(KeyError):
        Bar.from_dict({"symbol": "X"})
