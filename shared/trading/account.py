"""The account: what it is worth (``equity``), today's P&L (``day_pnl``) — the one computation
the engine, its equity records, ``bdt`` and the dashboard all show — and buying power: an order
sized against what one spot account can pay, the same rule for paper, backtest and live (the
engine applies it before the broker sees the order).

A buy's cost plus its fee must fit in the free quote (cash not reserved by resting buys); a
sell must fit in the free base (held, not reserved by resting sells): a spot account cannot
sell what it does not hold, and bitdaytrader has no margin model, so no short sale (config
load refuses ``strategy.allow_short``). An order that does not fit is reduced to the whole
lots that fit, or refused when not one lot does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from shared.trading.lots import floor_to_step, lots_qty
from shared.trading.types import OrderRequest

BUYING_POWER = "buying power"        # the rule's name in reasons and report counts
NO_SHORT = "spot: no short sale"


def equity(cash: float, qty: float, mark: float) -> float:
    """What the account is worth: its quote ``cash`` plus the position (``qty``, signed)
    marked at ``mark``."""
    return cash + qty * mark


def day_pnl(equity: float | None, day_start_equity: float | None) -> float | None:
    """Today's P&L: ``equity`` less the day's starting equity (the risk state's
    ``day_start_equity``, set at the day's first bar); None without equity or before any
    bar started a day (the risk state's 0.0)."""
    if equity is None or not day_start_equity:
        return None
    return equity - day_start_equity


@dataclass(frozen=True, slots=True)
class BuyingPower:
    """What an account can spend now: ``quote_free`` (quote currency) and ``base_free``
    (base units), each net of what resting orders have reserved."""

    quote_free: float
    base_free: float

    @classmethod
    def of(cls, cash: float, held: float, resting: list[dict[str, Any]], mark: float,
           fee_rate: float) -> BuyingPower:
        """From a book: ``cash`` and the position ``held`` less the orders not final
        (``TradingState.open_orders`` rows): a buy reserves qty × (its limit, else ``mark``)
        × (1 + ``fee_rate``), a sell its qty."""
        quote, base = cash, max(held, 0.0)
        for row in resting:
            if row["side"] == "buy":
                quote -= row["qty"] * (row.get("limit_price") or mark) * (1 + fee_rate)
            else:
                base -= row["qty"]
        return cls(max(quote, 0.0), max(base, 0.0))


def fit_to_account(order: OrderRequest, price: float, fee_rate: float, step: float,
                   power: BuyingPower, quote: str = "quote", base: str = "base"
                   ) -> tuple[OrderRequest | None, str, str]:
    """``order`` reduced to what ``power`` can pay, with a note and the rule that bound it
    ("" when it fits as it is). ``price``: what one unit will cost (a market buy's adverse
    fill price, a limit's limit), ``fee_rate``: the fee as a fraction of notional, ``step``:
    the lot (quantities stay whole lots). Returns (None, note, rule) when not one lot fits.

    Rule: buy qty ≤ floor(quote_free / (price × (1 + fee_rate))); sell qty ≤ floor(base_free).
    """
    if order.side == "buy":
        unit = price * (1 + fee_rate)
        cap = floor_to_step(power.quote_free / unit, step) if unit > 0 else 0.0
        rule = BUYING_POWER
        what = f"free {quote} {power.quote_free:,.2f} at {price:,.6g} + fee {fee_rate:.4%}"
    else:
        cap = floor_to_step(power.base_free, step)
        rule = NO_SHORT
        what = f"holding {power.base_free:.12g} {base}"
    if order.qty <= cap:
        return order, "", ""
    if cap < lots_qty(1, step):
        return None, f"{rule}: refused, not one lot of {step:g} fits ({what})", rule
    return replace(order, qty=cap), f"{rule}: qty {order.qty:.12g} → {cap:.12g} ({what})", rule
