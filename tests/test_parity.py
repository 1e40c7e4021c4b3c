"""`bdt backtest --parity DAY` (issue 13): a day the live paper bot traded — with a short gap
(bridged) and a long one (features and GARCH warm up again) in it — backtested decision by
decision gives zero differences. And a difference, when there is one, is named."""

from __future__ import annotations

import json

import polars as pl
import pytest

from shared.market.synthetic import SyntheticMarket
from tests.helpers import wait_until
from tests.stack import Stack

M = 60_000
DAY = 86_400_000
T0 = 1_700_006_400_000          # a UTC midnight


@pytest.mark.slow
def test_a_replayed_paper_day_with_gaps_backtests_to_the_same_decisions(tmp_path):
    frame = SyntheticMarket("BTC/USDT", M, 31, start_ts=T0).frame(3 * 1440)
    day3 = T0 + 2 * DAY
    gaps = (pl.col("ts") >= day3 + 300 * M) & (pl.col("ts") < day3 + 303 * M) | \
        (pl.col("ts") >= day3 + 700 * M) & (pl.col("ts") < day3 + 820 * M)
    frame = frame.filter(~gaps)                                   # 3 and 120 bars missing
    replay = tmp_path / "three-days.csv"
    frame.write_csv(replay)
    s = Stack(BDT_MARKET__REPLAY_PATH=str(replay), BDT_MARKET__REPLAY_SPEED="0",
              BDT_MARKET__REPLAY_TRAIN_FRACTION="0.35", BDT_MODEL__TRAIN_BARS="1512",
              BDT_MODEL__MIN_TRAIN_BARS="1000", BDT_BOT__PREDICTION_WAIT_MS="10000",
              BDT_RISK__MAX_PREDICTION_AGE_S="60", BDT_STRATEGY__ENTRY_THRESHOLD="0",
              BDT_STRATEGY__P_UP_MARGIN="0")
    try:
        assert s.bdt("train", "--if-missing").returncode == 0
        replayed = frame.height - int(frame.height * 0.35)
        s.start().wait_running(["cache", "history", "predictor", "bot"], timeout=60)
        wait_until(lambda: s.call("bot", "status")["decisions"] >= replayed, timeout=240,
                   interval=1, what=f"{replayed} decisions")
        wait_until(lambda: s.call("history", "status")["stored"] >= replayed, timeout=30,
                   what="every bar stored")
        status = s.call("bot", "status")
        assert status["decided_without_prediction"] >= 60          # the long gap's warm-up
        trades = json.loads(s.bdt("trades", "--json").stdout)
        assert any(t["ts"] >= day3 for t in trades), "the bot traded on day 3"
        out = s.bdt("backtest", "--parity", "2023-11-17", "--json")
        report = json.loads(out.stdout)
        assert report["compared"] == 1440 - 123
        assert report["differences"] == [], report["differences"][:3]
        assert out.returncode == 0
        # a difference is named: the bot's own record of one bar edited
        db = s.var / "data" / "trading.db"
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("UPDATE decisions SET action = 'sell', target_qty = 0 WHERE bar_ts = ?",
                    (day3 + 1000 * M,))
        con.commit()
        con.close()
        out = s.bdt("backtest", "--parity", "2023-11-17", "--json")
        report = json.loads(out.stdout)
        assert out.returncode == 3 and len(report["differences"]) == 1
        assert report["differences"][0]["bar_ts"] == day3 + 1000 * M
    finally:
        s.remove()
