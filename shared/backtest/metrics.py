"""A backtest's figures: a superset of what freqtrade and backtesting.py print.

Returns are computed on daily closing equity (crypto trades every day: 365 days a year).
Sharpe = mean / std of daily returns × √365 (risk-free rate 0); Sortino uses the downside
deviation (root mean square of the negative daily returns); Calmar = annualized return / max
drawdown; SQN = √n × mean / std of the trades' P&L (Van Tharp); profit factor = gross profit /
gross loss; expectancy = mean P&L per trade. Annualized figures are withheld, with the reason,
when the window is shorter than ``MIN_DAYS`` days or has fewer than ``MIN_TRADES`` trades.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from shared.backtest.state import DAY_MS, EquityTracker

MIN_DAYS = 30          # shorter: annualized figures mean nothing
MIN_TRADES = 5         # fewer: per-trade statistics mean nothing
YEAR_DAYS = 365


@dataclass
class Trade:
    """One round trip from flat to flat (a flip ends one and starts the next)."""

    entry_ts: int
    exit_ts: int
    side: str                # long | short
    qty: float
    entry_price: float       # average
    exit_price: float        # average
    pnl: float               # net of both fees
    fees: float
    entry_reason: str
    exit_reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def round_trips(fills: list[dict[str, Any]]) -> list[Trade]:
    """Fills (oldest first, with ``realized_pnl`` and ``reason``) into round trips."""
    trades: list[Trade] = []
    qty = 0.0
    open_: dict[str, Any] | None = None
    for f in fills:
        signed = f["qty"] if f["side"] == "buy" else -f["qty"]
        if open_ is None:
            open_ = {"ts": f["ts"], "side": "long" if signed > 0 else "short", "qty": 0.0,
                     "cost": 0.0, "exit_qty": 0.0, "exit_value": 0.0, "pnl": 0.0, "fees": 0.0,
                     "reason": f["reason"]}
        adding = qty == 0 or qty * signed > 0
        if adding:
            open_["qty"] += abs(signed)
            open_["cost"] += abs(signed) * f["price"]
        else:
            open_["exit_qty"] += abs(signed)
            open_["exit_value"] += abs(signed) * f["price"]
        open_["pnl"] += f["realized_pnl"]
        open_["fees"] += f["fee"]
        qty += signed
        if abs(qty) < 1e-12 or (not adding and qty * signed > 0):     # flat, or flipped
            trades.append(Trade(open_["ts"], f["ts"], open_["side"], open_["qty"],
                                open_["cost"] / open_["qty"],
                                open_["exit_value"] / max(open_["exit_qty"], 1e-300),
                                open_["pnl"], open_["fees"], open_["reason"], f["reason"]))
            open_ = None
            if abs(qty) >= 1e-12:      # the flip's remainder opens the next trade
                open_ = {"ts": f["ts"], "side": "long" if qty > 0 else "short",
                         "qty": abs(qty), "cost": abs(qty) * f["price"], "exit_qty": 0.0,
                         "exit_value": 0.0, "pnl": 0.0, "fees": 0.0, "reason": f["reason"]}
            else:
                qty = 0.0
    return trades


def _withheld(reason: str) -> dict[str, str]:
    return {"withheld": reason}


def compute(eq: EquityTracker, trades: list[Trade], *, start_ts: int, end_ts: int,
            first_close: float, last_close: float, fees_paid: float,
            rejected: dict[str, int], starting_cash: float) -> dict[str, Any]:
    """Every figure of the report, as plain JSON values (see the module docstring)."""
    eq.finish()
    final = eq.last if eq.last is not None else starting_cash
    days = (end_ts - start_ts) / DAY_MS
    total = final / starting_cash - 1.0
    closes = [e for _, e in eq.daily]
    daily = [b / a - 1.0 for a, b in zip([starting_cash, *closes[:-1]], closes, strict=True)
             if a > 0]
    pnls = [t.pnl for t in trades]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p <= 0]
    m: dict[str, Any] = {
        "start_ts": start_ts, "end_ts": end_ts, "days": round(days, 3), "bars": eq.bars,
        "exposure": eq.bars_in_market / eq.bars if eq.bars else 0.0,
        "starting_equity": starting_cash, "final_equity": final,
        "total_return": total, "buy_and_hold_return": last_close / first_close - 1.0
        if first_close else None,
        "max_drawdown": eq.max_drawdown, "max_drawdown_ts": eq.max_drawdown_ts,
        "max_drawdown_duration_days": round(eq.longest_drawdown_ms / DAY_MS, 3),
        "trades": len(trades), "fees_paid": fees_paid,
        "win_rate": len(wins) / len(trades) if trades else None,
        "best_trade": max(pnls) if pnls else None, "worst_trade": min(pnls) if pnls else None,
        "avg_trade": statistics.fmean(pnls) if pnls else None,
        "avg_trade_duration_min": statistics.fmean((t.exit_ts - t.entry_ts) / 60_000
                                                   for t in trades) if trades else None,
        "profit_factor": sum(wins) / -sum(losses) if losses and sum(losses) < 0 else None,
        "expectancy": statistics.fmean(pnls) if pnls else None,
        "rejected_entries": rejected,
    }
    if len(pnls) >= MIN_TRADES and statistics.pstdev(pnls) > 0:
        m["sqn"] = math.sqrt(len(pnls)) * statistics.fmean(pnls) / statistics.stdev(pnls)
    else:
        m["sqn"] = _withheld(f"{len(pnls)} trades: SQN needs at least {MIN_TRADES}")
    if days < MIN_DAYS:
        why = f"{days:.1f} days: annualized figures need at least {MIN_DAYS} days"
        for key in ("annualized_return", "volatility", "sharpe", "sortino", "calmar"):
            m[key] = _withheld(why)
        return m
    annual = (1 + total) ** (YEAR_DAYS / days) - 1 if total > -1 else -1.0
    mean, sd = statistics.fmean(daily), statistics.pstdev(daily)
    downside = math.sqrt(statistics.fmean([min(r, 0.0) ** 2 for r in daily]))
    m["annualized_return"] = annual
    m["volatility"] = sd * math.sqrt(YEAR_DAYS)
    m["sharpe"] = mean / sd * math.sqrt(YEAR_DAYS) if sd > 0 else None
    m["sortino"] = mean / downside * math.sqrt(YEAR_DAYS) if downside > 0 else None
    m["calmar"] = annual / eq.max_drawdown if eq.max_drawdown > 0 else None
    return m


def monthly_returns(eq: EquityTracker, starting_cash: float) -> list[dict[str, Any]]:
    """Return of each calendar month (UTC) from daily closing equity."""
    import datetime as dt

    out: list[dict[str, Any]] = []
    prev = starting_cash
    month_end: dict[str, float] = {}
    for day_ts, equity in eq.daily:
        key = dt.datetime.fromtimestamp(day_ts / 1000, dt.UTC).strftime("%Y-%m")
        month_end[key] = equity
    for key, equity in month_end.items():
        out.append({"month": key, "return": equity / prev - 1.0 if prev else None})
        prev = equity
    return out
