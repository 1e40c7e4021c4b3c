"""The three models behind one prediction, and their pickle-free files.

LightGBM gives p_up = P(forward return > 0), Ridge the expected forward log return, and
GARCH(1,1) the next bar's volatility. This module is what the live predictor loads: it needs
only numpy and lightgbm (fitting, with sklearn and arch, is in ``shared.training``), which
keeps the predictor's import footprint inside its 500 MB cap.

Artifacts are plain text (LightGBM's own model format and JSON) rather than pickle: loading
runs no code, and a truncated or edited file is detected and named instead of half-loaded.
"""

from __future__ import annotations

import ctypes
import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from shared.models.artifacts import (
    FEATURES_FILE,
    GARCH_FILE,
    LGBM_FILE,
    RIDGE_FILE,
    ModelError,
)
from shared.models.features import FEATURES, missing_bars


@dataclass(frozen=True)
class RidgeParams:
    """Ridge regression on standardized features, as plain arrays: (x - mean) / scale @ coef."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, x: np.ndarray) -> float:
        """The expected return of one feature row ``x`` (n_features,)."""
        return float(self.predict_rows(x))

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        """The expected return of each row of ``rows`` (n, n_features) → (n,); a single row
        (n_features,) gives a 0-d array. The one formula, live and batch."""
        return (rows - self.mean) / self.scale @ self.coef + self.intercept


@dataclass(frozen=True)
class GarchParams:
    """Fitted GARCH(1,1) on returns multiplied by ``scale`` (see training.garch_scale)."""

    mu: float
    omega: float
    alpha: float
    beta: float
    scale: float
    nu: float | None = None  # Student-t degrees of freedom; does not enter the variance


@dataclass
class GarchState:
    """Live GARCH(1,1): ``var`` is the conditional variance of the *next* bar's return, in
    scaled units². O(1) per bar: σ²_{t+1} = ω + α (scale·r_t − μ)² + β σ²_t."""

    params: GarchParams
    var: float

    def update(self, ret: float) -> float:
        """Fold in the latest bar's 1-bar log return (a fraction); returns the new ``var``."""
        p = self.params
        self.var = p.omega + p.alpha * (ret * p.scale - p.mu) ** 2 + p.beta * self.var
        return self.var

    @property
    def volatility(self) -> float:
        """Next bar's return standard deviation as a fraction (0.001 = 0.1%)."""
        return math.sqrt(self.var) / self.params.scale


def valid_garch(omega: float, alpha: float, beta: float) -> bool:
    """arch bounds α + β ≤ 1; on short samples the fit can sit on that boundary (IGARCH).
    The one-step update is still well defined there, so only α + β > 1 (explosive) fails."""
    finite = all(math.isfinite(v) for v in (omega, alpha, beta))
    return finite and omega > 0 and alpha >= 0 and beta >= 0 and alpha + beta <= 1 + 1e-6


def garch_state_from_returns(params: GarchParams, returns: np.ndarray) -> GarchState:
    """Warm a state from recent 1-bar log returns, starting the way arch does: the first
    variance comes from an exponentially weighted (0.94) mean of the first ≤75 squared
    deviations from the sample mean. After a few hundred returns the start no longer matters."""
    returns = np.asarray(returns, dtype=np.float64)
    if returns.size == 0:
        raise ValueError("no returns to warm the GARCH state from")
    scaled = returns * params.scale
    head = scaled[:75] - scaled.mean()
    weights = 0.94 ** np.arange(head.size)
    backcast = float(np.sum(head**2 * weights / weights.sum()))
    state = GarchState(params, params.omega + (params.alpha + params.beta) * backcast)
    for r in returns.tolist():
        state.update(r)
    return state


class VolatilityTrack:
    """The GARCH(1,1) state carried bar by bar, as the live predictor carries it — one
    implementation for the predictor and the backtest.

    Returns since the last cut (a start, a long gap) are kept, at most ``max_returns``; the
    state is built from them at the first return after a cut (``garch_state_from_returns``) and
    updated with every return after that. Without parameters (no model) only returns are kept;
    ``set_params`` (a model loaded) rebuilds the state from them."""

    def __init__(self, params: GarchParams | None, max_returns: int) -> None:
        self.params = params
        self.returns: deque[float] = deque(maxlen=max_returns)
        self.state: GarchState | None = None

    def cut(self) -> None:
        """Nothing before this point may count: a gap longer than the model allows."""
        self.returns.clear()
        self.state = None

    def fold(self, ret: float) -> None:
        """Add the latest bar's 1-bar log return."""
        self.returns.append(ret)
        if self.state is not None:
            self.state.update(ret)
        elif self.params is not None:
            self.state = garch_state_from_returns(self.params, np.array(self.returns))

    def set_params(self, params: GarchParams | None) -> None:
        self.params = params
        self.state = None if params is None or not self.returns else \
            garch_state_from_returns(params, np.array(self.returns))


class VolatilityFeed:
    """``VolatilityTrack`` driven by closes: a gap of more than ``max_gap_bars`` missing bars
    cuts it (the rule ``IncrementalFeatures`` and ``batch_features`` use); the predictor and
    the backtest both drive it."""

    def __init__(self, track: VolatilityTrack, timeframe: int, max_gap_bars: int) -> None:
        self.track, self.timeframe, self.max_gap_bars = track, timeframe, max_gap_bars
        self.last_ts: int | None = None
        self.last_close: float | None = None

    def fold(self, ts: int, close: float) -> float | None:
        """Fold one bar; the volatility for a prediction on it (None: not warm)."""
        if self.last_ts is not None:
            if missing_bars(ts - self.last_ts, self.timeframe) > self.max_gap_bars:
                self.track.cut()
            elif self.last_close is not None:
                self.track.fold(math.log(close / self.last_close))
        self.last_ts, self.last_close = ts, close
        state = self.track.state
        return None if state is None else state.volatility


class SingleRowPredictor:
    """LightGBM's single-row fast path (``LGBM_BoosterPredictForMatSingleRowFast`` of its C
    API): the prediction parameters are parsed once, not on every call as ``Booster.predict``
    does — ~8 instead of ~49 µs a bar, the same number. Holds the booster: the handle
    points into it."""

    def __init__(self, booster: lgb.Booster, n_features: int) -> None:
        from lightgbm.basic import _LIB, _c_str, _safe_call

        if booster.num_model_per_iteration() != 1:    # the output buffer holds one value
            raise ValueError("the single-row fast path needs a model with one output per row")
        self._lib, self._check, self.booster = _LIB, _safe_call, booster
        self.n_features = n_features
        self._handle = ctypes.c_void_p()
        self._check(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1),  # normal, all
            ctypes.c_int(1), ctypes.c_int32(n_features), _c_str("num_threads=1"),  # float64
            ctypes.byref(self._handle)))
        self._out = np.zeros(1)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64()

    def __call__(self, x: np.ndarray) -> float:
        if x.dtype != np.float64 or x.shape != (self.n_features,) or not x.flags.c_contiguous:
            raise ValueError(f"expected {self.n_features} contiguous float64 values")
        self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(
            self._handle, x.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._out_len),
            self._out_ptr))
        return float(self._out[0])

    def __del__(self) -> None:
        if getattr(self, "_handle", None) and self._handle.value:
            self._lib.LGBM_FastConfigFree(self._handle)
            self._handle = ctypes.c_void_p()


@dataclass
class ModelSet:
    """The three fitted models plus the feature list and horizon they were trained for."""

    booster: lgb.Booster
    ridge: RidgeParams
    garch: GarchParams
    features: tuple[str, ...]
    horizon: int
    _p_up: SingleRowPredictor | None = field(default=None, repr=False, compare=False)

    def predict(self, x: np.ndarray, garch: GarchState, *, model_version: str,
                bar_time: int | None = None) -> dict[str, Any]:
        """One prediction for the bar at ``bar_time`` (None: features given ad hoc, no bar).

        The three outputs stay separate, each from the model suited to it: expected_return is
        Ridge's forecast, p_up LightGBM's, volatility GARCH's (per bar, a fraction). They are
        not blended: a blend would need its own calibration, and the bot can see disagreement.
        ``garch`` must already include this bar's return (``garch.update``).
        """
        if x.shape != (len(self.features),) or not np.isfinite(x).all():
            raise ValueError(f"feature vector must be {len(self.features)} finite floats, "
                             f"got shape {x.shape}")
        if self._p_up is None:
            self._p_up = SingleRowPredictor(self.booster, len(self.features))
        return {
            "expected_return": self.ridge.predict(x),
            "p_up": self._p_up(np.ascontiguousarray(x, dtype=np.float64)),
            "volatility": garch.volatility,
            "model_version": model_version,
            "bar_time": bar_time,
        }

    def save(self, directory: Path) -> None:
        """Write the four artifact files into ``directory`` (which must exist)."""
        r, g = self.ridge, self.garch
        (directory / LGBM_FILE).write_text(self.booster.model_to_string())
        _write_json(directory / RIDGE_FILE, {
            "mean": r.mean.tolist(), "scale": r.scale.tolist(), "coef": r.coef.tolist(),
            "intercept": r.intercept})
        _write_json(directory / GARCH_FILE, {
            "mu": g.mu, "omega": g.omega, "alpha": g.alpha, "beta": g.beta, "scale": g.scale,
            "nu": g.nu})
        _write_json(directory / FEATURES_FILE,
                    {"features": list(self.features), "horizon": self.horizon})

    @classmethod
    def load(cls, directory: Path) -> ModelSet:
        """Read and validate the artifacts; any problem is a ModelError naming the file."""
        path = directory / FEATURES_FILE
        meta = _read_json(path)
        features, horizon = meta.get("features"), meta.get("horizon")
        if not isinstance(features, list) or tuple(features) != FEATURES:
            raise ModelError(path, f"features {features} differ from this code's {list(FEATURES)}")
        if not isinstance(horizon, int) or horizon < 1:
            raise ModelError(path, f"horizon {horizon!r}: expected an int >= 1")
        n = len(FEATURES)
        return cls(_load_booster(directory / LGBM_FILE, n), _load_ridge(directory / RIDGE_FILE, n),
                   _load_garch(directory / GARCH_FILE), FEATURES, horizon)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(path, "missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(path, f"unreadable JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ModelError(path, "expected a JSON object")
    return obj


def _load_booster(path: Path, n_features: int) -> lgb.Booster:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError(path, "missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(path, f"unreadable: {exc}") from None
    # LightGBM 4.7 aborts the whole process (C++ terminate) on a truncated model instead of
    # raising, so completeness is checked before parsing. Other corruption is caught by the
    # registry's sha256 check, which runs before this.
    if "end of trees" not in text:
        raise ModelError(path, "truncated LightGBM model (no 'end of trees' marker)")
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ModelError(path, f"invalid LightGBM model: {exc}") from None
    if booster.num_feature() != n_features:
        raise ModelError(path, f"model has {booster.num_feature()} features, expected {n_features}")
    if booster.num_model_per_iteration() != 1:
        raise ModelError(path, f"model has {booster.num_model_per_iteration()} outputs per row, "
                               "expected 1 (a binary p_up model)")
    return booster


def _floats(path: Path, obj: dict[str, Any], key: str, n: int | None = None) -> np.ndarray:
    """obj[key] as finite float64 values: a vector of length n, or a scalar when n is None."""
    try:
        value = np.asarray(obj[key], dtype=np.float64)
    except KeyError:
        raise ModelError(path, f"missing key {key!r}") from None
    except (TypeError, ValueError):
        raise ModelError(path, f"{key!r} is not numeric") from None
    expected = (n,) if n is not None else ()
    if value.shape != expected:
        raise ModelError(path, f"{key!r} has shape {value.shape}, expected {expected}")
    if not np.isfinite(value).all():
        raise ModelError(path, f"{key!r} has non-finite values")
    return value


def _load_ridge(path: Path, n: int) -> RidgeParams:
    obj = _read_json(path)
    ridge = RidgeParams(_floats(path, obj, "mean", n), _floats(path, obj, "scale", n),
                        _floats(path, obj, "coef", n), float(_floats(path, obj, "intercept")))
    if (ridge.scale <= 0).any():
        raise ModelError(path, "'scale' must be positive")
    return ridge


def _load_garch(path: Path) -> GarchParams:
    obj = _read_json(path)
    mu, omega, alpha, beta, scale = (
        float(_floats(path, obj, k)) for k in ("mu", "omega", "alpha", "beta", "scale"))
    nu = obj.get("nu")
    if not valid_garch(omega, alpha, beta) or scale <= 0:
        raise ModelError(path, f"not a usable GARCH(1,1): omega={omega} alpha={alpha} "
                               f"beta={beta} scale={scale}")
    if nu is not None and not isinstance(nu, (int, float)):
        raise ModelError(path, f"'nu' {nu!r}: expected a number or null")
    return GarchParams(mu, omega, alpha, beta, scale, None if nu is None else float(nu))
