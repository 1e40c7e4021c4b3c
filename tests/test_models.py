"""The three models: GARCH live update vs arch, one prediction, pickle-free round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from arch import arch_model

from shared.market.synthetic import SyntheticMarket
from shared.models import fitting
from shared.models.artifacts import ModelError
from shared.models.features import FEATURES, batch_features
from shared.models.fitting import (
    FALLBACK_ALPHA,
    FALLBACK_BETA,
    fit_garch,
    garch_problem,
    train_model_set,
)
from shared.models.model_set import (
    GarchParams,
    GarchState,
    ModelSet,
    SingleRowPredictor,
    VolatilityTrack,
    garch_state_from_returns,
    valid_garch,
)


def returns(n: int, seed: int) -> np.ndarray:
    close = SyntheticMarket("BTC/USDT", 60_000, seed).frame(n + 1)["close"].to_numpy()
    return np.diff(np.log(close))


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return SyntheticMarket("BTC/USDT", 60_000, 21).frame(6000)


@pytest.fixture(scope="module")
def trained(bars: pl.DataFrame) -> tuple[ModelSet, dict]:
    return train_model_set(bars)


@pytest.fixture(scope="module")
def features(bars: pl.DataFrame) -> np.ndarray:
    return batch_features(bars).drop_nulls(FEATURES).select(FEATURES).tail(300).to_numpy()


def test_garch_update_matches_arch_forecast() -> None:
    r = returns(3000, seed=5)
    n = 2500
    fit = fit_garch(r[:n])
    assert fit.converged and fit.params == fit.fitted
    params = fit.params
    res = arch_model(r[:n] * params.scale, mean="Constant", vol="GARCH", p=1, q=1, dist="t",
                     rescale=False).fit(disp="off", show_warning=False)
    # From the fit's last conditional variance, fold in the last fitted return: arch's forecast.
    state = GarchState(params, float(np.asarray(res.conditional_volatility)[-1] ** 2))
    state.update(float(r[n - 1]))
    fitted = res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    assert state.var == pytest.approx(fitted, rel=1e-9)
    for ret in r[n:]:
        state.update(float(ret))
    fixed = arch_model(r * params.scale, mean="Constant", vol="GARCH", p=1, q=1, dist="t",
                       rescale=False).fix([params.mu, params.omega, params.alpha, params.beta,
                                           params.nu])
    expected = fixed.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    assert state.var == pytest.approx(expected, rel=1e-9)
    # Warming from history alone (as the live predictor does) lands on the same value.
    assert garch_state_from_returns(params, r).var == pytest.approx(expected, rel=1e-9)
    assert state.volatility == pytest.approx(math.sqrt(expected) / params.scale)


def test_garch_recovers_synthetic_dynamics() -> None:
    fit = fit_garch(returns(6000, seed=1))
    assert fit.converged and fit.why is None and fit.model == "garch"
    assert 0.85 < fit.params.alpha + fit.params.beta < 1.0
    assert fit.params.scale >= 100


def test_smallest_configured_training_set_on_the_unit_root_boundary(caplog) -> None:
    """model.train_bars may be as low as 500; seed 20 lands on the α + β = 1 boundary
    (1.0000000002): recorded as not converged, with the reason, and the fallback is used."""
    with caplog.at_level("WARNING", logger="bdt.train"):
        model_set, report = train_model_set(SyntheticMarket("BTC/USDT", 60_000, 20).frame(500))
    assert report["window"]["train_rows"] >= 200
    garch = report["metrics"]["garch"]
    assert garch["converged"] is False and garch["model"] == "fallback"
    assert garch["converged_why"].startswith("persistence alpha + beta = 1.0000000002")
    assert garch["fitted"]["persistence"] == pytest.approx(1.0, abs=1e-6)
    assert (garch["alpha"], garch["beta"]) == (FALLBACK_ALPHA, FALLBACK_BETA)
    assert garch["persistence"] == pytest.approx(0.99) and garch["nu"] is None
    assert math.isfinite(garch["holdout_var_ratio"])
    assert "GARCH fit not used (persistence alpha + beta = 1.0000000002" in caplog.text
    assert model_set.garch.alpha + model_set.garch.beta < 1
    with pytest.raises(ValueError, match="usable rows"):
        train_model_set(SyntheticMarket("BTC/USDT", 60_000, 5).frame(250))


def test_garch_problem_names_what_is_wrong() -> None:
    """Persistence 1.00000007 was recorded as converged: True."""
    def params(alpha: float, beta: float) -> GarchParams:
        return GarchParams(0.0, 0.1, alpha, beta, 1000.0, 5.0)

    assert valid_garch(0.1, 0.07, 0.93000007)           # the model_set's own bound lets it by
    assert "persistence alpha + beta = 1.00000007" in garch_problem(params(0.07, 0.93000007), 0)
    assert "not stationary" in garch_problem(params(0.09, 0.9099999999999), 0)  # the boundary
    assert garch_problem(params(0.07, 0.90), 0) is None
    assert "did not converge (arch convergence flag 9)" in garch_problem(params(0.07, 0.9), 9)
    assert "not finite" in garch_problem(GarchParams(math.nan, 0.1, 0.07, 0.9, 1.0), 0)


def test_garch_that_does_not_converge_falls_back(monkeypatch, caplog) -> None:
    real = fitting.arch_model

    def stopped_early(*args, **kwargs):                  # the optimizer's iteration limit hit
        model = real(*args, **kwargs)
        fit = model.fit
        model.fit = lambda **kw: fit(**kw, options={"maxiter": 2})
        return model

    monkeypatch.setattr(fitting, "arch_model", stopped_early)
    r = returns(3000, seed=5)
    with caplog.at_level("WARNING", logger="bdt.train"):
        fit = fit_garch(r)
    assert not fit.converged and fit.model == "fallback"
    assert "the optimizer did not converge" in fit.why and "did not converge" in caplog.text
    assert fit.fitted is not None and fit.params != fit.fitted
    p = fit.params
    assert (p.alpha, p.beta, p.nu) == (FALLBACK_ALPHA, FALLBACK_BETA, None)
    assert valid_garch(p.omega, p.alpha, p.beta)
    # the fallback targets the training variance: its long-run variance is the sample's
    assert p.omega / (1 - p.alpha - p.beta) == pytest.approx(np.var(r * p.scale))


def test_the_predictor_runs_a_fallback_model_set(tmp_path: Path, features) -> None:
    """A model set whose GARCH fell back saves, loads and predicts as any other: the
    predictor's volatility track carries its parameters bar by bar."""
    model_set, report = train_model_set(SyntheticMarket("BTC/USDT", 60_000, 20).frame(500))
    assert report["metrics"]["garch"]["model"] == "fallback"
    model_set.save(tmp_path)
    loaded = ModelSet.load(tmp_path)
    assert loaded.garch == model_set.garch
    track = VolatilityTrack(loaded.garch, max_returns=1000)
    for ret in returns(300, seed=9):
        track.fold(float(ret))
    out = loaded.predict(features[-1], track.state, model_version="v", bar_time=1)
    assert 0.0 < out["volatility"] < 0.1 and 0.0 <= out["p_up"] <= 1.0


def test_prediction_keys_and_ranges(trained, features) -> None:
    model_set, _ = trained
    state = garch_state_from_returns(model_set.garch, returns(500, seed=9))
    for x in features:
        out = model_set.predict(x, state, model_version="v1", bar_time=123)
        assert set(out) == {"expected_return", "p_up", "volatility", "model_version", "bar_time"}
        assert 0.0 <= out["p_up"] <= 1.0
        assert 0.0 < out["volatility"] < 0.1
        assert abs(out["expected_return"]) < 0.1
        assert (out["model_version"], out["bar_time"]) == ("v1", 123)
    with pytest.raises(ValueError):
        model_set.predict(features[0][:-1], state, model_version="v", bar_time=0)
    with pytest.raises(ValueError):
        model_set.predict(np.full(len(FEATURES), np.nan), state, model_version="v",
                              bar_time=0)


def test_single_row_fast_path_equals_booster_predict(trained, features) -> None:
    model_set, _ = trained
    fast = SingleRowPredictor(model_set.booster, len(FEATURES))
    rows = np.ascontiguousarray(features, dtype=np.float64)
    expected = model_set.booster.predict(rows, num_threads=1)
    assert [fast(np.ascontiguousarray(x)) for x in rows] == expected.tolist()
    with pytest.raises(ValueError, match="contiguous float64"):
        fast(rows[0][:-1])
    with pytest.raises(ValueError, match="contiguous float64"):
        fast(rows[:len(FEATURES), 0])                      # a strided view


def test_training_report(trained) -> None:
    _, report = trained
    m = report["metrics"]
    auc = m["lgbm"]["auc"]
    assert isinstance(auc, float) and 0.0 <= auc <= 1.0
    assert 0.0 <= m["lgbm"]["accuracy"] <= 1.0
    assert 0.0 <= m["baseline"]["always_up_accuracy"] <= 1.0
    assert math.isfinite(m["ridge"]["corr"]) and math.isfinite(m["ridge"]["r2"])
    assert m["garch"]["converged"] is True and "converged_why" not in m["garch"]
    assert m["garch"]["model"] == "garch" and math.isfinite(m["garch"]["loglikelihood"])
    assert m["garch"]["persistence"] < 1
    w = report["window"]
    assert w["rows"] == 6000 and w["train_to_ts"] < w["holdout_from_ts"]
    json.dumps(report, allow_nan=False)  # metadata-ready


def test_save_load_round_trip(trained, features, tmp_path: Path) -> None:
    model_set, _ = trained
    model_set.save(tmp_path)
    loaded = ModelSet.load(tmp_path)
    state = garch_state_from_returns(model_set.garch, returns(500, seed=9))
    for x in features:
        kw = {"model_version": "v", "bar_time": 1}
        assert loaded.predict(x, state, **kw) == model_set.predict(x, state, **kw)
    assert loaded.garch == model_set.garch and loaded.horizon == model_set.horizon


def test_truncated_lgbm_is_named(trained, tmp_path: Path) -> None:
    trained[0].save(tmp_path)
    path = tmp_path / "lgbm.txt"
    path.write_text(path.read_text()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="lgbm.txt"):
        ModelSet.load(tmp_path)


def test_a_multi_output_lgbm_is_refused(trained, tmp_path: Path) -> None:
    trained[0].save(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, len(FEATURES)))
    multiclass = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1},
                           lgb.Dataset(x, rng.integers(0, 3, 300)), 3)
    (tmp_path / "lgbm.txt").write_text(multiclass.model_to_string())
    with pytest.raises(ModelError, match="lgbm.txt.*3 outputs per row"):
        ModelSet.load(tmp_path)
    with pytest.raises(ValueError, match="one output per row"):
        SingleRowPredictor(multiclass, len(FEATURES))


def test_wrong_ridge_shape_is_named(trained, tmp_path: Path) -> None:
    trained[0].save(tmp_path)
    path = tmp_path / "ridge.json"
    ridge = json.loads(path.read_text())
    ridge["coef"] = ridge["coef"][:-1]
    path.write_text(json.dumps(ridge))
    with pytest.raises(ModelError, match=r"ridge\.json.*'coef' has shape"):
        ModelSet.load(tmp_path)


def test_missing_or_mismatched_files_are_named(trained, tmp_path: Path) -> None:
    trained[0].save(tmp_path)
    (tmp_path / "garch.json").write_text("{not json")
    with pytest.raises(ModelError, match="garch.json"):
        ModelSet.load(tmp_path)
    trained[0].save(tmp_path)
    (tmp_path / "features.json").write_text(json.dumps({"features": ["a"], "horizon": 1}))
    with pytest.raises(ModelError, match="features.json.*differ"):
        ModelSet.load(tmp_path)
    trained[0].save(tmp_path)
    (tmp_path / "lgbm.txt").unlink()
    with pytest.raises(ModelError, match="lgbm.txt: missing"):
        ModelSet.load(tmp_path)
