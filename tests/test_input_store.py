"""The store's timeframe is what runs (issue "Trading numbers you can trust", case 8): a
market.timeframe other than the store's is refused wherever the store is opened, naming both;
and the walk-forward's refusals say a UTC date, not epoch ms. Each test runs `bdt` as a user
types it, with BDT_VAR pointing at a temporary directory."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from shared.market.synthetic import SyntheticMarket
from shared.storage.bar_store import BarStore
from tests.helpers import child_env

M = 60_000
T0 = 1_704_153_600_000          # 2024-01-02 00:00 UTC


def bdt(var: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bdt", *args], env=child_env(var, **env), capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="module")
def one_minute_store(tmp_path_factory) -> Path:
    """A var directory whose store holds three days of 1m bars, imported by `bdt data import`."""
    tmp = tmp_path_factory.mktemp("store")
    path = tmp / "1m.csv"
    SyntheticMarket("BTC/USDT", M, 5, start_ts=T0).frame(3 * 1440).write_csv(path)
    out = bdt(tmp / "var", "data", "import", str(path))
    assert out.returncode == 0, out.stderr
    return tmp / "var"


# --- market.timeframe against the store ------------------------------------------------------
def test_a_backtest_at_5m_on_a_store_of_1m_bars_is_refused_naming_both(one_minute_store):
    """`--set market.timeframe=5m` ran a backtest over 1m bars as if each were five minutes."""
    out = bdt(one_minute_store, "backtest", "--strategy", "sma_cross",
              "--set", "market.timeframe=5m")
    assert out.returncode == 1, out.stdout
    assert "holds 1m bars" in out.stderr and "market.timeframe is 5m" in out.stderr
    assert "Traceback" not in out.stderr
    reports = one_minute_store / "reports"
    assert not reports.exists() or not any(reports.iterdir())   # no report written


def test_the_environment_and_the_walkforward_are_refused_too(one_minute_store):
    out = bdt(one_minute_store, "backtest", "--strategy", "sma_cross",
              BDT_MARKET__TIMEFRAME="5m")
    assert out.returncode == 1 and "holds 1m bars" in out.stderr, out.stderr
    out = bdt(one_minute_store, "walkforward", "--set", "market.timeframe=5m")
    assert out.returncode == 1 and "holds 1m bars" in out.stderr, out.stderr
    out = bdt(one_minute_store, "data", "list", BDT_MARKET__TIMEFRAME="5m")
    assert out.returncode != 0 and "holds 1m bars" in out.stderr, out.stderr


def test_the_matching_timeframe_still_runs(one_minute_store):
    out = bdt(one_minute_store, "backtest", "--strategy", "sma_cross", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["metrics"]["bars"] > 0


def test_a_store_made_before_it_recorded_its_timeframe_is_judged_by_its_bars(tmp_path):
    store = BarStore(tmp_path / "var" / "data" / "market")       # no timeframe: the old way
    store.insert_frame("BTC/USDT", SyntheticMarket("BTC/USDT", M, 7, start_ts=T0).frame(2000))
    store.close()
    out = bdt(tmp_path / "var", "backtest", "--strategy", "sma_cross",
              "--set", "market.timeframe=5m")
    assert out.returncode == 1 and "holds 1m bars" in out.stderr, out.stderr


# --- times in refusals -----------------------------------------------------------------------
def test_walkforward_refusals_say_a_utc_date(one_minute_store):
    out = bdt(one_minute_store, "walkforward", BDT_WALKFORWARD__TRAIN_DAYS="60")
    assert out.returncode == 1
    assert re.search(r"before \d{4}-\d\d-\d\d \d\d:\d\d UTC", out.stderr), out.stderr
    assert not re.search(r"\d{13}", out.stderr), out.stderr
