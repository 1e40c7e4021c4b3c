"""The fill model (shared by the paper broker and the backtester) and the paper broker.

Fills are deliberately adverse: a market order pays half the spread plus slippage on top of
the reference price, then the taker fee; a limit order fills only when a bar trades at or
through its price, at the maker fee. No I/O and no clock: times are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.config import Config
from shared.market import Bar
from shared.trading import Fill, OrderRequest


class DuplicateOrderError(ValueError):
    """A client_id was submitted again: a resend after a crash must never fill twice."""


def _check_price(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class FillModel:
    fee_taker: float   # fraction of notional
    fee_maker: float
    spread: float      # full bid/ask spread as a fraction of price
    slippage: float    # extra adverse move on a market order, fraction of price

    def __post_init__(self) -> None:
        for name in ("fee_taker", "fee_maker", "spread", "slippage"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"paper.{name} must be a finite number ≥ 0, got {value!r}")
        if self.spread / 2 + self.slippage >= 1:
            raise ValueError("paper.spread / 2 + paper.slippage must be < 1 (sell price > 0)")

    @classmethod
    def from_config(cls, cfg: Config) -> FillModel:
        s = cfg.section("paper")
        return cls(fee_taker=s["fee_taker"], fee_maker=s["fee_maker"], spread=s["spread"],
                   slippage=s["slippage"])

    def cost_per_side(self) -> float:
        """What one market order costs, as a fraction of notional: the strategy's hurdle."""
        return self.spread / 2 + self.slippage + self.fee_taker

    def market_fill(self, order: OrderRequest, ref_price: float, ts: int) -> Fill:
        """Fill a market order at once: buy above ``ref_price``, sell below; taker fee."""
        if order.type != "market":
            raise ValueError(f"market_fill needs a market order, got {order.type!r}")
        _check_price("ref_price", ref_price)
        if order.side == "buy":
            price = ref_price * (1 + self.spread / 2 + self.slippage)
        else:
            price = ref_price * (1 - self.spread / 2 - self.slippage)
        return Fill(order.client_id, order.symbol, order.side, order.qty, price,
                    order.qty * price * self.fee_taker, ts, "taker")

    def limit_fill(self, order: OrderRequest, bar: Bar) -> Fill | None:
        """Fill a resting limit order if ``bar`` touches it, else None.

        Buy: fills when low ≤ limit, at the limit — or at the open when the bar opens below it.
        Sell: fills when high ≥ limit, at the limit — or at the open when the bar opens above.
        The fill's ts is ``bar.ts`` (the bar's open time): the model does not know the
        timeframe, so "some time during this bar" is stamped with the bar's key.
        """
        if order.type != "limit" or order.limit_price is None:
            raise ValueError(f"limit_fill needs a limit order, got {order.type!r}")
        if order.symbol != bar.symbol:
            raise ValueError(f"order for {order.symbol} cannot fill on a {bar.symbol} bar")
        limit = order.limit_price
        if order.side == "buy":
            if bar.low > limit:
                return None
            price = min(bar.open, limit)
        else:
            if bar.high < limit:
                return None
            price = max(bar.open, limit)
        return Fill(order.client_id, order.symbol, order.side, order.qty, price,
                    order.qty * price * self.fee_maker, bar.ts, "maker")


class PaperBroker:
    """Simulated execution with a FillModel. Market orders fill on submit; limit orders rest
    until a later ``on_bar`` touches them. A client_id is accepted once, ever: a second
    submit with an id that was filled, is open, or was cancelled raises DuplicateOrderError,
    so a resend can neither fill twice nor revive a cancelled order."""

    def __init__(self, fill_model: FillModel) -> None:
        self.fill_model = fill_model
        self._open: dict[str, OrderRequest] = {}   # insertion order = submission order
        self._seen: set[str] = set()

    def submit(self, order: OrderRequest, ref_price: float, ts: int) -> list[Fill]:
        """Market: the fill at once. Limit: rests (returns []); it is not checked against the
        bar it was decided on — only bars passed to ``on_bar`` afterwards can fill it."""
        if order.client_id in self._seen:
            raise DuplicateOrderError(f"client_id {order.client_id!r} was already submitted")
        if order.type == "market":
            fill = self.fill_model.market_fill(order, ref_price, ts)   # validates first
            self._seen.add(order.client_id)
            return [fill]
        self._seen.add(order.client_id)
        self._open[order.client_id] = order
        return []

    def on_bar(self, bar: Bar) -> list[Fill]:
        """Fill (and remove) every resting limit order on ``bar.symbol`` that the bar touches."""
        fills: list[Fill] = []
        for client_id, order in list(self._open.items()):
            if order.symbol != bar.symbol:
                continue
            fill = self.fill_model.limit_fill(order, bar)
            if fill is not None:
                fills.append(fill)
                del self._open[client_id]
        return fills

    def cancel(self, client_id: str) -> bool:
        """True when an open order was removed; False when none was open under that id."""
        return self._open.pop(client_id, None) is not None

    def open_orders(self) -> list[OrderRequest]:
        return list(self._open.values())
