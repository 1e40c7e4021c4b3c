"""Fit the ModelSet on a bar history and measure it honestly on a later, unseen slice.

The split is by time (no shuffling) with ``horizon`` rows purged between train and holdout,
because the last training targets look ``horizon`` bars into the holdout. Every model —
GARCH included — is fitted on the training slice only, so the holdout metrics describe the
very models that get registered. Fits run under a one-thread cap (the VPS core budget).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import polars as pl
from arch import arch_model
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score, roc_auc_score
from threadpoolctl import threadpool_limits

from shared.models.features import (
    FEATURES,
    MAX_GAP_BARS,
    SEGMENT,
    batch_features,
    forward_return_expr,
    segment_expr,
)
from shared.models.finite import finite_json, why_key
from shared.models.model_set import (
    GarchParams,
    ModelSet,
    RidgeParams,
    garch_state_from_returns,
    valid_garch,
)

if TYPE_CHECKING:
    from shared.models.registry import ModelRegistry

log = logging.getLogger("bdt.train")

LGBM_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 50,
    "feature_fraction": 0.8, "lambda_l2": 1.0, "num_threads": 1, "deterministic": True,
    "force_col_wise": True, "verbose": -1,
}
LGBM_ROUNDS = 150
RIDGE_ALPHA = 1.0      # features are standardized; with thousands of rows this only tames
                       # the collinear ones (ret_1, ret_1_z, ret_5)
TARGET_CLIP = 0.005    # Ridge fits a target winsorized at its 0.5/99.5% quantiles: jumps
                       # would otherwise dominate squared error
MIN_TRAIN_ROWS = 200


def fit_lgbm(x: np.ndarray, up: np.ndarray, seed: int) -> lgb.Booster:
    """Binary classifier for ``up`` (1 when the forward return is > 0)."""
    data = lgb.Dataset(x, label=up, feature_name=list(FEATURES), free_raw_data=True)
    return lgb.train({**LGBM_PARAMS, "seed": seed}, data, num_boost_round=LGBM_ROUNDS)


def fit_ridge(x: np.ndarray, y: np.ndarray) -> RidgeParams:
    """Ridge on standardized features; the scaler is kept as arrays, not as sklearn objects."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    lo, hi = np.quantile(y, [TARGET_CLIP, 1 - TARGET_CLIP])
    model = Ridge(alpha=RIDGE_ALPHA).fit((x - mean) / scale, np.clip(y, lo, hi))
    return RidgeParams(mean, scale, np.asarray(model.coef_, dtype=np.float64),
                       float(model.intercept_))


def garch_scale(returns: np.ndarray) -> float:
    """Percent (×100), then further powers of ten until the scaled returns' std is ≥ 1.

    arch's optimizer is tuned for percent-sized daily returns; raw fractions (σ ≈ 1e-3 per
    minute) make ω ≈ 1e-8 and the problem badly conditioned. Even in percent, 1-minute returns
    (σ ≈ 0.08) leave the optimizer stuck at its starting values, while ×1000 and ×10000 give
    the same (correct) parameters — so the scale is chosen from the data and stored.
    """
    std, scale = float(np.std(returns)), 100.0
    while 0 < std * scale < 1.0:
        scale *= 10.0
    return scale


FALLBACK_ALPHA, FALLBACK_BETA = 0.06, 0.93   # the fallback's weight on the last squared
                                            # return (RiskMetrics' 0.06) and on the last variance
PERSISTENCE_TOLERANCE = 1e-6   # α + β this close to 1 (or above) is the unit-root boundary


@dataclass(frozen=True)
class GarchFit:
    """A volatility model for the ModelSet and what became of arch's fit.

    ``params`` is what the model set uses: arch's estimate when it converged to a stationary
    GARCH (α + β < 1), else the fallback. ``fitted`` is arch's estimate (None when arch
    raised), ``converged`` says whether it is used, ``why`` why not."""

    params: GarchParams
    fitted: GarchParams | None
    converged: bool
    why: str | None
    loglikelihood: float | None

    @property
    def model(self) -> str:
        """'garch' (the fit is used) or 'fallback' (see ``fallback_garch``)."""
        return "garch" if self.converged else "fallback"


def garch_problem(params: GarchParams, convergence_flag: int) -> str | None:
    """Why a GARCH(1,1) fit cannot be used, or None: the optimizer did not converge, a
    parameter is not finite or out of bounds, or the persistence α + β is ≥ 1 (within
    ``PERSISTENCE_TOLERANCE``: arch stops on the boundary α + β = 1 only up to its optimizer's
    tolerance, 1.00000007 as well as 0.9999999999), where the variance does not revert to a
    finite mean."""
    if convergence_flag != 0:
        return f"the optimizer did not converge (arch convergence flag {convergence_flag})"
    values = (params.mu, params.omega, params.alpha, params.beta)
    if not all(math.isfinite(v) for v in values):
        return f"a parameter is not finite: {params}"
    persistence = params.alpha + params.beta
    if persistence >= 1 - PERSISTENCE_TOLERANCE:
        return (f"persistence alpha + beta = {persistence!r} >= 1: not stationary (the "
                "fit sits on or beyond the unit-root boundary)")
    if not valid_garch(params.omega, params.alpha, params.beta):
        return f"parameters out of bounds: omega {params.omega}, alpha {params.alpha}, " \
               f"beta {params.beta}"
    return None


def fallback_garch(returns: np.ndarray) -> GarchParams:
    """The volatility model when the GARCH fit cannot be used: an exponentially weighted
    variance (weight ``FALLBACK_ALPHA`` on the last squared return, ``FALLBACK_BETA`` on the
    last variance) pulled back to the training returns' variance (variance targeting:
    ω = (1 − α − β)·var). It is a stationary GARCH(1,1) with fixed α and β, so the predictor
    and the backtest run it unchanged; on March 2023 1m BTC its holdout calibration is within
    a few percent of the boundary fits it replaces."""
    scale = garch_scale(returns)
    scaled = np.asarray(returns, dtype=np.float64) * scale
    var = max(float(np.var(scaled)), 1e-12)
    return GarchParams(float(np.mean(scaled)), (1 - FALLBACK_ALPHA - FALLBACK_BETA) * var,
                       FALLBACK_ALPHA, FALLBACK_BETA, scale, None)


def fit_garch(returns: np.ndarray) -> GarchFit:
    """GARCH(1,1), constant mean, Student-t errors — 1-bar returns are fat-tailed (jumps,
    t shocks), and the t likelihood keeps a jump from inflating α the way Gaussian QMLE
    does; on synthetic data it fits far better (higher log-likelihood) and recovers the true
    α, β. ν does not enter the variance recursion, so the live update is the same either way.

    A fit that did not converge, or is not stationary (``garch_problem``), is recorded as
    such and replaced by ``fallback_garch``, with a warning in the log: the model set always
    has a usable volatility model, and its metadata says which one."""
    scale = garch_scale(returns)
    model = arch_model(returns * scale, mean="Constant", vol="GARCH", p=1, q=1, dist="t",
                       rescale=False)
    fitted = loglikelihood = None
    try:
        res = model.fit(disp="off", show_warning=False)
        p = res.params
        fitted = GarchParams(float(p["mu"]), float(p["omega"]), float(p["alpha[1]"]),
                             float(p["beta[1]"]), scale, float(p["nu"]))
        loglikelihood = float(res.loglikelihood)
        why = garch_problem(fitted, int(res.convergence_flag))
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        why = f"arch could not fit: {type(exc).__name__}: {exc}"
    if why is None and fitted is not None:
        return GarchFit(fitted, fitted, True, None, loglikelihood)
    params = fallback_garch(returns)
    log.warning("GARCH fit not used (%s): volatility from the fallback, an exponentially "
                "weighted variance (alpha %s, beta %s) targeting the training variance",
                why, FALLBACK_ALPHA, FALLBACK_BETA)
    return GarchFit(params, fitted, False, why, loglikelihood)


def garch_metrics(fit: GarchFit, holdout_var_ratio: float | None) -> dict[str, Any]:
    """The ``garch`` section of the training report: the parameters in use, the fit's
    status (``converged`` and, when false, ``converged_why``) and arch's own estimate when
    the fallback replaced it (``fitted``)."""
    g = fit.params
    out: dict[str, Any] = {
        "model": fit.model, "mu": g.mu, "omega": g.omega, "alpha": g.alpha, "beta": g.beta,
        "persistence": g.alpha + g.beta, "nu": g.nu, "scale": g.scale,
        "loglikelihood": fit.loglikelihood, "converged": fit.converged,
        "holdout_var_ratio": holdout_var_ratio}
    if g.nu is None:
        out[why_key("nu")] = "the fallback has no Student-t distribution"
    if fit.loglikelihood is None:
        out[why_key("loglikelihood")] = "arch could not fit"
    if not fit.converged:
        out[why_key("converged")] = fit.why
        f = fit.fitted
        out["fitted"] = None if f is None else {
            "mu": f.mu, "omega": f.omega, "alpha": f.alpha, "beta": f.beta,
            "persistence": f.alpha + f.beta, "nu": f.nu}
    if holdout_var_ratio is None:
        out[why_key("holdout_var_ratio")] = "no holdout returns"
    return out


def train_model_set(bars: pl.DataFrame, *, horizon: int = 1, holdout_frac: float = 0.2,
                    seed: int = 7, timeframe_ms: int = 60_000,
                    max_gap_bars: int = MAX_GAP_BARS) -> tuple[ModelSet, dict[str, Any]]:
    """Fit the three models on the older part of ``bars`` and score them on the newest
    ``holdout_frac``. Returns the ModelSet and a report ready to be registry metadata:
    ``{"horizon", "window": {...}, "metrics": {...}}``: strict JSON, a metric that cannot be
    computed is null with a ``<name>_why`` beside it (``shared.models.finite``)."""
    if not 0 < holdout_frac < 1:
        raise ValueError(f"holdout_frac {holdout_frac}: must be in (0, 1)")
    if bars.height < 2 or not bars["ts"].diff().drop_nulls().gt(0).all():
        raise ValueError("bars must be at least 2 rows with strictly increasing ts")
    # features, targets and GARCH returns never span a gap longer than max_gap_bars (the
    # predictor warms up again after one): each is computed within its run of bars
    df = batch_features(bars, timeframe_ms, max_gap_bars) \
        .with_columns(segment_expr(timeframe_ms, max_gap_bars)).with_columns(
            forward_return_expr(horizon).over(SEGMENT).alias("target"),
            (pl.col("close") / pl.col("close").shift(1)).log().over(SEGMENT).alias("bar_ret"))
    rows = df.drop_nulls([*FEATURES, "target"])
    n_hold = int(rows.height * holdout_frac)
    n_train = rows.height - n_hold - horizon  # purge: train targets must end before holdout
    if n_train < MIN_TRAIN_ROWS or n_hold < 2:
        raise ValueError(f"{rows.height} usable rows: need {MIN_TRAIN_ROWS} to train plus a "
                         f"holdout (got {n_train} train, {n_hold} holdout)")
    train, hold = rows.head(n_train), rows.tail(n_hold)
    x_train, y_train = train.select(FEATURES).to_numpy(), train["target"].to_numpy()
    x_hold, y_hold = hold.select(FEATURES).to_numpy(), hold["target"].to_numpy()
    train_end = int(train["ts"][-1])
    bar_rets = df["bar_ret"]  # all bars, for GARCH: 1-bar returns up to the train end; none
    # across a cut (null at each run's first bar): the state is carried over a gap, not fed NaN
    garch_train = bar_rets.filter(df["ts"] <= train_end).drop_nulls().to_numpy()
    garch_hold = bar_rets.filter(df["ts"] > train_end).drop_nulls().to_numpy()

    with threadpool_limits(limits=1):
        booster = fit_lgbm(x_train, (y_train > 0).astype(np.float64), seed)
        ridge = fit_ridge(x_train, y_train)
        garch_fit = fit_garch(garch_train)
    garch = garch_fit.params

    p_up = booster.predict(x_hold, num_threads=1)
    up = y_hold > 0
    expected = ridge.predict_rows(x_hold)
    state = garch_state_from_returns(garch, garch_train)
    standardized = []  # (scaled residual)² / forecast variance: ≈ 1 when well calibrated
    for r in garch_hold.tolist():
        standardized.append((r * garch.scale - garch.mu) ** 2 / state.var)
        state.update(r)

    one_class = not 0 < up.sum() < up.size
    lgbm = {"auc": None if one_class else float(roc_auc_score(up, p_up)),
            "accuracy": float(np.mean((p_up > 0.5) == up)), "trees": booster.num_trees()}
    if one_class:
        lgbm[why_key("auc")] = "the holdout's targets are all of one sign"
    ridge_metrics = {"corr": None, "r2": float(r2_score(y_hold, expected)),
                     "direction_accuracy": float(np.mean((expected > 0) == up))}
    if np.std(expected) > 0 and np.std(y_hold) > 0:
        ridge_metrics["corr"] = float(np.corrcoef(expected, y_hold)[0, 1])
    else:
        ridge_metrics[why_key("corr")] = "the forecasts or the holdout's targets are constant"
    metrics = {
        "lgbm": lgbm,
        "ridge": ridge_metrics,
        "garch": garch_metrics(garch_fit,
                               float(np.mean(standardized)) if standardized else None),
        "baseline": {"always_up_accuracy": float(np.mean(up))},
    }
    window = {"from_ts": int(bars["ts"][0]), "to_ts": int(bars["ts"][-1]), "rows": bars.height,
              "train_rows": n_train, "train_to_ts": train_end, "holdout_rows": n_hold,
              "holdout_from_ts": int(hold["ts"][0])}
    model_set = ModelSet(booster, ridge, garch, FEATURES, horizon)
    return model_set, finite_json({"horizon": horizon, "window": window, "metrics": metrics})


def train_and_register(bars: pl.DataFrame, registry: ModelRegistry, *, promote: bool = True,
                       **kw: Any) -> str:
    """Train, register, and (by default) promote; returns the new version."""
    model_set, report = train_model_set(bars, **kw)
    version = registry.register(model_set, report)
    if promote:
        registry.promote(version)
    return version
