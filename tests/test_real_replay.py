"""`make run` on a user's own replay file (issue 13): the exchange's kline export of March 2023
used to crash-loop the bot (`missing column(s) ts`), and then `bdt train` found 0 bars. Now
the first part of the file is stored and trained on, the rest replayed, and paper trades come."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.stack import Stack

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "BTCUSDT-1m-2023-03-01_21-binanceus.csv"


@pytest.mark.slow
def test_make_run_on_a_real_exchange_export_reaches_paper_trades():
    if not REAL.exists():
        pytest.skip(f"{REAL} is not beside the checkout")
    # costs at zero and no margins: the point is the pipeline, not the model's edge on March 2023
    s = Stack(BDT_MARKET__REPLAY_PATH=str(REAL), BDT_MARKET__REPLAY_SPEED="3000",
              BDT_MODEL__TRAIN_BARS="9000", BDT_STRATEGY__ENTRY_THRESHOLD="0",
              BDT_STRATEGY__P_UP_MARGIN="0", BDT_PAPER__FEE_TAKER="0", BDT_PAPER__SPREAD="0",
              BDT_PAPER__SLIPPAGE="0")
    try:
        trained = s.bdt("train", "--if-missing", "--json")          # what `make run` runs first
        assert trained.returncode == 0, trained.stderr
        source = json.loads(trained.stdout)["source"]
        assert source.endswith(" → 2023-03-07 07:11 UTC (9,000 bars)")   # the file's first 30%
        s.start().wait_running(["cache", "history", "predictor", "bot"], timeout=60)

        def fills() -> list:
            out = s.bdt("trades", "--json")
            return json.loads(out.stdout) if out.returncode == 0 else []
        wait_until(lambda: len(fills()) >= 2, timeout=120, interval=1, what="paper trades")
        status = s.call("bot", "status")
        assert status["bars_rejected"] == 0 and status["last_bar"]["ts"] > 1677628800000 + \
            9072 * 60_000                                              # replaying the rest
        assert status["decided_without_prediction"] < status["decisions"]
        log = (s.var / "log" / "bot.log").read_text()
        assert "Traceback" not in log
    finally:
        s.remove()


def test_bdt_train_if_missing_on_too_little_data_lets_make_run_go_on(tmp_path):
    from tests.helpers import child_env

    short = tmp_path / "short.csv"
    short.write_text("open_time,open,high,low,close,volume\n"
                     "2023-03-01 00:00:00+00:00,1,1,1,1,1\n")
    env = child_env(tmp_path / "var", BDT_MARKET__REPLAY_PATH=str(short))
    out = subprocess.run(["bdt", "train", "--if-missing"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "starting without a model" in out.stderr
    out = subprocess.run(["bdt", "train"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "model.min_train_bars" in out.stderr
