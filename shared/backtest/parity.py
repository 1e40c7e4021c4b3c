"""``bdt backtest --parity DAY``: does a backtest of a day the live bot traded decide what the
bot decided, bar by bar?

The backtest replays the bot's whole recorded life up to the end of DAY — from the first bar it
decided, with the starting cash it started with, on the bars history stored and the model
version it used that day — so its state at the start of DAY comes from the same decisions, not
from a reconstruction. Every bar of DAY is compared (action and target quantity); each
difference is listed with its bar, both decisions and both reasons.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.backtest.runner import BacktestSpec, run_backtest
from shared.backtest.state import DAY_MS
from shared.config import Config
from shared.storage.trading_state import TradingReader


class ParityError(ValueError):
    """The parity check cannot run: no state database, or no decision on that day."""


@dataclass
class ParityReport:
    day_start: int
    symbol: str
    model_version: str | None
    compared: int = 0
    differences: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {"day_start": self.day_start, "symbol": self.symbol,
                "model_version": self.model_version, "compared": self.compared,
                "differences": self.differences, "notes": self.notes, "equal": self.equal}


def live_decisions(cfg: Config, symbol: str, start: int, end: int
                   ) -> tuple[list[dict[str, Any]], int | None]:
    """The bot's decisions of ``symbol`` in [start, end), and its first decided bar ever
    (read-only: the bot may be running)."""
    path = cfg.var_dir / "data" / "trading.db"
    if not path.is_file():
        raise ParityError(f"no state database at {path}: the bot never traded here")
    with TradingReader.open(path) as state:
        return state.decisions_between(symbol, start, end), state.first_decided_ts(symbol)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["action"] == b["action"] and math.isclose(a["target_qty"], b["target_qty"],
                                                       rel_tol=1e-9, abs_tol=1e-12)


def check_parity(cfg: Config, day_start: int, symbol: str) -> ParityReport:
    """Compare DAY (the UTC day starting at ``day_start``, epoch ms) decision by decision."""
    day_start -= day_start % DAY_MS
    day_end = day_start + DAY_MS
    live, first = live_decisions(cfg, symbol, day_start, day_end)
    if not live or first is None:
        raise ParityError(f"the bot decided no {symbol} bar on that day")
    versions = Counter(d["prediction"]["model_version"] for d in live if d["prediction"])
    version = versions.most_common(1)[0][0] if versions else None
    report = ParityReport(day_start, symbol, version)
    if len(versions) > 1:
        report.notes.append(f"the bot used {len(versions)} model versions that day "
                            f"({dict(versions)}); the backtest used {version}")
    spec = BacktestSpec(symbol, first, day_end, model_version=version,
                        keep_decisions=(day_start, day_end), label="parity")
    result = run_backtest(cfg, spec)
    ours = {d["bar_ts"]: d for d in result.decisions}
    for row in live:
        mine = ours.pop(row["bar_ts"], None)
        report.compared += 1
        if mine is None:
            report.differences.append({"bar_ts": row["bar_ts"], "live": _brief(row),
                                       "backtest": None,
                                       "why": "the backtest has no such bar (not in the store)"})
        elif not _same(row, mine):
            why = "live decided without a prediction" if row["prediction"] is None and \
                mine["prediction"] is not None else "different decision"
            report.differences.append({"bar_ts": row["bar_ts"], "live": _brief(row),
                                       "backtest": _brief(mine), "why": why})
    for ts, mine in sorted(ours.items()):
        report.differences.append({"bar_ts": ts, "live": None, "backtest": _brief(mine),
                                   "why": "the bot decided no such bar (it was down?)"})
    return report


def _brief(d: dict[str, Any]) -> dict[str, Any]:
    return {"action": d["action"], "target_qty": d["target_qty"], "reason": d["reason"]}
