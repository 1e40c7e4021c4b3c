"""The promotion gate: a challenger model replaces the champion only when it beats it, on the
same out-of-sample window, by a configured margin over at least a configured number of trades,
and its deflated Sharpe ratio clears a configured bar. ``challenge`` is the whole flow a
walk-forward runs: the challenger against the champion, the gate's decision (``decide``), the
challenger registered with it, promoted when the gate says so.

The deflated Sharpe ratio (Bailey & López de Prado, "The Deflated Sharpe Ratio: Correcting for
Selection Bias, Backtest Overfitting and Non-Normality", 2014) is the probability that the true
Sharpe ratio exceeds the best one expected by chance among N trials:

    DSR = Φ( (SR − SR₀) · √(T − 1) / √(1 − γ₃·SR + (γ₄ − 1)/4 · SR²) )
    SR₀ = √V · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))

with SR the per-period Sharpe ratio of T returns, γ₃ their skewness and γ₄ their (non-excess)
kurtosis, V the variance of the N trials' Sharpe ratios and γ ≈ 0.5772 (Euler–Mascheroni).
N is every configuration tried (the folds' models, the sweep's combinations); with N = 1,
SR₀ = 0 and DSR is the probabilistic Sharpe ratio against 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.config import Config
    from shared.models.registry import ModelRegistry

EULER_GAMMA = 0.5772156649015329


def per_period_sharpe(returns: Any) -> float:
    """mean / sample standard deviation (ddof 1) of a return series, non-finite values dropped;
    0 with fewer than three returns or no variation. Not annualized."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    sd = float(np.std(r, ddof=1)) if r.size >= 3 else 0.0
    return float(np.mean(r)) / sd if sd > 0 else 0.0


def deflated_sharpe(returns: np.ndarray, trials: int,
                    trial_sharpes: list[float] | None = None) -> dict[str, float]:
    """DSR of per-period ``returns`` after ``trials`` configurations (see the module doc).
    ``trial_sharpes``: the trials' per-period Sharpe ratios, for V; without them (or fewer than
    two), V is the variance of the Sharpe ratio's estimate, (1 + SR²/2) / (T − 1)."""
    from scipy.stats import kurtosis, norm, skew

    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    t = r.size
    if t < 3 or float(np.std(r)) == 0.0:
        return {"dsr": 0.0, "sharpe": 0.0, "sr0": 0.0, "periods": t, "trials": trials}
    sr = per_period_sharpe(r)
    g3, g4 = float(skew(r)), float(kurtosis(r, fisher=False))
    n = max(1, trials)
    if trial_sharpes is not None and len(trial_sharpes) >= 2:
        var = float(np.var(trial_sharpes, ddof=1))
    else:
        var = (1 + sr * sr / 2) / (t - 1)
    sr0 = 0.0 if n == 1 else math.sqrt(var) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n) + EULER_GAMMA * norm.ppf(1 - 1 / (n * math.e)))
    denom = 1 - g3 * sr + (g4 - 1) / 4 * sr * sr
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(denom) if denom > 0 else 0.0
    return {"dsr": float(norm.cdf(z)), "sharpe": sr, "sr0": sr0, "periods": t, "trials": n,
            "skew": g3, "kurtosis": g4}


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    challenger: dict[str, Any]
    champion: dict[str, Any] | None
    dsr: dict[str, float] = field(default_factory=dict)
    rules: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, dsr: dict[str, float],
           *, min_margin: float, min_trades: int, min_dsr: float) -> GateDecision:
    """Promote or not, with every reason. ``challenger``/``champion``: backtest metrics on the
    same window (``total_return``, ``trades``); no champion: the margin is against 0."""
    reasons = []
    base = champion["total_return"] if champion else 0.0
    margin = challenger["total_return"] - base
    if margin < min_margin:
        reasons.append(f"return {challenger['total_return']:+.4%} beats the champion's "
                       f"{base:+.4%} by {margin:+.4%} < the margin {min_margin:.4%}")
    if challenger["trades"] < min_trades:
        reasons.append(f"{challenger['trades']} trades < {min_trades} needed to judge")
    if dsr.get("dsr", 0.0) < min_dsr:
        reasons.append(f"deflated Sharpe ratio {dsr.get('dsr', 0.0):.3f} < {min_dsr:.3f} "
                       f"({dsr.get('trials', 1)} trials)")
    return GateDecision(not reasons, reasons or ["beats the champion on every rule"],
                        challenger, champion, dsr,
                        {"min_margin": min_margin, "min_trades": min_trades,
                         "min_dsr": min_dsr})


# --- the flow: challenger against champion, decision, register, promote ---------------------
NO_CHALLENGER = {"decision": None, "reason": "the newest fold failed: no challenger"}


def challenge(cfg: Config, results: list[Any],
              champion_figures: Callable[[Any], dict[str, Any]],
              summary: dict[str, Any], extra_trials: int = 0) -> dict[str, Any]:
    """The promotion flow of a walk-forward: the newest fold's model (the challenger) against
    the promoted version (the champion) on the newest fold's test window, the gate's
    decision, the challenger registered with the decision (and the walk-forward's ``summary``)
    in its metadata and the registry's gate log, promoted when the gate says so and
    ``walkforward.auto_promote`` is on. ``results``: the walk-forward's fold results
    (``shared.backtest.walkforward.FoldResult``: fold, error, model, oos, trades, returns,
    seconds). ``champion_figures(fold)``: the promoted model's ``total_return`` and
    ``trades`` over that fold's test window — the caller backtests it (this layer runs no
    backtest). ``extra_trials``: configurations tried besides the folds (parameter sweeps),
    for the DSR. Returns the gate's record as the report holds it (``NO_CHALLENGER`` when the
    newest fold failed)."""
    from shared.models.registry import GATE_FILE, ModelRegistry

    registry = ModelRegistry(cfg.model_dir)
    newest = results[-1]
    if newest.error is not None:
        return dict(NO_CHALLENGER)
    champion_version = registry.current()
    champion = None if champion_version is None else {
        "version": champion_version, **champion_figures(newest.fold)}
    sharpes = [per_period_sharpe(r.returns) for r in results if r.error is None]
    dsr = deflated_sharpe(newest.returns, trials=len(results) + extra_trials,
                          trial_sharpes=sharpes)
    w = cfg.section("walkforward")
    decision = decide({"total_return": newest.oos["total_return"], "trades": newest.trades},
                      champion, dsr, min_margin=w["min_return_margin"],
                      min_trades=w["min_trades"], min_dsr=w["min_dsr"])
    version = register_challenger(cfg, registry, newest, len(results), decision, summary)
    promoted = decision.promote and w["auto_promote"]
    if promoted:
        registry.promote(version, reason="walk-forward promotion gate")
    gate = {**decision.to_dict(), "challenger_version": version,
            "champion_version": champion_version, "promoted": promoted}
    registry.log_event(GATE_FILE, gate)
    return gate


def register_challenger(cfg: Config, registry: ModelRegistry, newest: Any, folds: int,
                        decision: GateDecision, summary: dict[str, Any]) -> str:
    """The newest fold's model registered (not promoted) with its windows, training report,
    the gate's decision and the walk-forward's summary; its version."""
    fold = newest.fold
    window = {"from_ts": fold.train_start, "to_ts": fold.train_end,
              "oos_from_ts": fold.test_start, "oos_to_ts": fold.test_end}
    return registry.register(newest.model, {
        "horizon": cfg.get("model.horizon_bars"), "window": window,
        "source": f"walk-forward fold {fold.index} of {folds}",
        "metrics": newest.seconds.get("training_report"),    # GARCH fallback included
        "gate": decision.to_dict(), "walkforward": summary})
