"""Walk-forward (issue 15): fold boundaries with purge and embargo, a leak check that catches a
fold without them, the promotion gate's decisions, rollback, a failing fold recorded while the
others finish, and the same results on a Dask cluster as in-process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from shared.backtest.jobs import run_walkforward
from shared.backtest.walkforward import (
    Fold,
    WalkForwardError,
    config_env,
    make_folds,
    run_fold,
    run_folds,
)
from shared.config import load_config
from shared.market.synthetic import SyntheticMarket
from shared.models.artifacts import ModelError
from shared.models.fitting import train_and_register
from shared.models.promotion import decide, deflated_sharpe
from shared.models.registry import GATE_FILE, ModelRegistry
from shared.storage.bar_store import open_store

M = 60_000
DAY = 86_400_000
T0 = 1_700_006_400_000


def leaks(folds: list[Fold], horizon: int, timeframe: int) -> list[str]:
    """A fold leaks when a test bar is inside its training window, or when its last training
    target (horizon bars ahead) reaches into the test window."""
    found = []
    for f in folds:
        if f.train_start < f.test_end and f.test_start < f.train_end:
            found.append(f"fold {f.index}: test bars inside the training window")
        if f.train_end - timeframe + horizon * timeframe >= f.test_start:
            found.append(f"fold {f.index}: training targets reach the test window")
    return found


def test_fold_boundaries_on_a_hand_made_calendar():
    folds = make_folds(T0, T0 + 40 * DAY, train_days=10, test_days=7, folds=3, anchored=False,
                       purge_bars=15, embargo_bars=15, horizon_bars=15, timeframe=M)
    assert [(f.test_start, f.test_end) for f in folds] == [
        (T0 + 19 * DAY, T0 + 26 * DAY), (T0 + 26 * DAY, T0 + 33 * DAY),
        (T0 + 33 * DAY, T0 + 40 * DAY)]
    for f in folds:
        assert f.train_end == f.test_start - 30 * M              # purge 15 + embargo 15
        assert f.train_start == f.train_end - 10 * DAY
    anchored = make_folds(T0, T0 + 40 * DAY, train_days=10, test_days=7, folds=3,
                          anchored=True, purge_bars=15, embargo_bars=15, horizon_bars=15,
                          timeframe=M)
    assert {f.train_start for f in anchored} == {T0}
    with pytest.raises(WalkForwardError, match="start at 2023-11-15 00:00 UTC, too late for a "
                                               "10-day training window before 2023-11-13 23:30 "
                                               "UTC"):
        make_folds(T0, T0 + 20 * DAY, train_days=10, test_days=7, folds=3, anchored=False,
                   purge_bars=15, embargo_bars=15, horizon_bars=15, timeframe=M)


def test_no_fold_leaks_and_the_check_catches_one_without_purge_and_embargo():
    folds = make_folds(T0, T0 + 60 * DAY, train_days=20, test_days=7, folds=5, anchored=False,
                       purge_bars=15, embargo_bars=15, horizon_bars=15, timeframe=M)
    assert leaks(folds, 15, M) == []
    bare = [Fold(f.index, f.train_start, f.test_start, f.test_start, f.test_end)
            for f in folds]                                       # the gap removed
    assert len(leaks(bare, 15, M)) == len(folds)
    with pytest.raises(WalkForwardError, match="at least the label horizon"):
        make_folds(T0, T0 + 60 * DAY, train_days=20, test_days=7, folds=5, anchored=False,
                   purge_bars=15, embargo_bars=0, horizon_bars=15, timeframe=M)


def test_the_gate_promotes_only_when_every_rule_holds():
    good = {"dsr": 0.99, "trials": 12}
    yes = decide({"total_return": 0.03, "trades": 40}, {"total_return": 0.01, "trades": 30},
                 good, min_margin=0.005, min_trades=10, min_dsr=0.95)
    assert yes.promote and yes.reasons == ["beats the champion on every rule"]
    margin = decide({"total_return": 0.012, "trades": 40}, {"total_return": 0.01, "trades": 30},
                    good, min_margin=0.005, min_trades=10, min_dsr=0.95)
    assert not margin.promote and "< the margin" in margin.reasons[0]
    few = decide({"total_return": 0.03, "trades": 3}, None, good, min_margin=0.005,
                 min_trades=10, min_dsr=0.95)
    assert not few.promote and few.reasons == ["3 trades < 10 needed to judge"]
    lucky = decide({"total_return": 0.03, "trades": 40}, None, {"dsr": 0.4, "trials": 50},
                   min_margin=0.005, min_trades=10, min_dsr=0.95)
    assert not lucky.promote and "deflated Sharpe ratio 0.400" in lucky.reasons[0]


def test_the_deflated_sharpe_ratio_follows_bailey_and_lopez_de_prado():
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    returns = rng.normal(0.0005, 0.01, 1000)
    sr = returns.mean() / returns.std(ddof=1)
    one = deflated_sharpe(returns, trials=1)                   # N = 1: SR0 = 0, the PSR
    assert one["sr0"] == 0 and one["sharpe"] == pytest.approx(sr)
    assert one["dsr"] == pytest.approx(norm.cdf(
        sr * np.sqrt(999) / np.sqrt(1 - one["skew"] * sr + (one["kurtosis"] - 1) / 4 * sr**2)))
    trial_sharpes = list(rng.normal(0, 0.02, 100))
    many = deflated_sharpe(returns, trials=100, trial_sharpes=trial_sharpes)
    gamma = 0.5772156649015329
    sr0 = np.sqrt(np.var(trial_sharpes, ddof=1)) * ((1 - gamma) * norm.ppf(1 - 1 / 100)
                                                    + gamma * norm.ppf(1 - 1 / (100 * np.e)))
    assert many["sr0"] == pytest.approx(sr0)
    assert many["dsr"] < one["dsr"]                            # more trials, a higher bar


def test_no_challenger_when_the_newest_fold_failed(tmp_path):
    """The promotion flow (shared.models.promotion.challenge) registers nothing and says why."""
    from shared.backtest.walkforward import FoldResult
    from shared.models.promotion import NO_CHALLENGER, challenge

    cfg = load_config({"BDT_VAR": str(tmp_path)})
    failed = FoldResult(Fold(0, T0, T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY), error="ValueError")
    assert challenge(cfg, [failed], lambda fold: {}, {}) == NO_CHALLENGER
    registry = ModelRegistry(cfg.model_dir)
    assert registry.versions() == [] and registry.read_log(GATE_FILE) == []


def test_rollback_returns_to_the_previous_champion(tmp_path):
    frame = SyntheticMarket("BTC/USDT", M, 4).frame(1500)
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ModelError, match="nothing to roll back to"):
        registry.rollback()
    first = train_and_register(frame, registry)
    second = train_and_register(frame.tail(1200), registry)
    assert registry.current() == second
    assert registry.rollback() == first and registry.current() == first
    assert [e["reason"] for e in registry.read_log("promotions.jsonl")][-1] == \
        f"rollback from {second}"


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """40 days of a synthetic market, stored."""
    var = tmp_path_factory.mktemp("wf") / "var"
    cfg = load_config({"BDT_VAR": str(var)})
    frame = SyntheticMarket("BTC/USDT", M, 17, start_ts=T0).frame(40 * 1440)
    store = open_store(cfg)
    store.insert_frame("BTC/USDT", frame)
    store.compact("BTC/USDT", 0)
    store.close()
    return load_config({"BDT_VAR": str(var), "BDT_WALKFORWARD__TRAIN_DAYS": "6",
                        "BDT_WALKFORWARD__TEST_DAYS": "2", "BDT_WALKFORWARD__FOLDS": "3",
                        "BDT_WALKFORWARD__MIN_TRADES": "1", "BDT_WALKFORWARD__MIN_DSR": "0"})


def test_a_failing_fold_is_recorded_and_the_others_finish(market):
    cfg = market
    from shared.backtest.jobs import walkforward_folds

    folds = walkforward_folds(cfg, "BTC/USDT")
    broken = [Fold(0, T0 - 20 * DAY, T0 - 19 * DAY, folds[0].test_start, folds[0].test_end),
              *folds[1:]]                                   # no bars in its training window
    results = run_folds(cfg, "BTC/USDT", broken, {})
    assert results[0].error and "ValueError" in results[0].error
    assert all(r.error is None and r.oos["bars"] > 0 for r in results[1:])


def test_walkforward_gate_registers_the_challenger_and_records_its_decision(market):
    cfg = market
    doc, folder = run_walkforward(cfg, "BTC/USDT")
    assert doc["metrics"]["folds"] == 3 and doc["metrics"]["failed"] == 0
    gate = doc["gate"]
    registry = ModelRegistry(cfg.model_dir)
    meta = registry.metadata(gate["challenger_version"])
    assert meta["gate"]["promote"] == gate["promote"]
    assert "converged" in meta["metrics"]["garch"]      # the fold's training report, recorded
    assert registry.read_log(GATE_FILE)[-1]["challenger_version"] == gate["challenger_version"]
    assert (registry.current() == gate["challenger_version"]) == gate["promoted"]
    page = (folder / "report.html").read_text()
    assert "Folds: out-of-sample return" in page and "Promotion gate" in page


def test_dask_runs_the_folds_to_the_same_results_and_in_process_never_imports_dask(market):
    cfg = market
    from shared.backtest.jobs import walkforward_folds

    folds = walkforward_folds(cfg, "BTC/USDT")[:2]
    here = run_folds(cfg, "BTC/USDT", folds, {})
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        dask_cfg = load_config({**config_env(cfg),
                                "BDT_BATCH__DASK_SCHEDULER": cluster.scheduler_address})
        there = run_folds(dask_cfg, "BTC/USDT", folds, {})
    assert [(r.fold, r.oos, r.is_, r.trades, r.daily) for r in here] == \
        [(r.fold, r.oos, r.is_, r.trades, r.daily) for r in there]
    code = ("import sys; from shared.config import load_config; "
            "from shared.backtest.walkforward import run_fold; import shared.backtest.jobs; "
            "assert not any(m.startswith(('dask', 'distributed')) for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert run_fold is not None
