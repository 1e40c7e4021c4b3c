"""The paper broker: simulated execution with the fill model — market orders fill at once,
limit orders rest until a later bar touches them."""

from __future__ import annotations

from typing import Any

from shared.market.bars import Bar
from shared.trading.fills import FillModel
from shared.trading.types import NO_RULES, Balance, Fill, MarketRules, OrderRequest, OrderResult


class DuplicateOrderError(ValueError):
    """A client_id was submitted again: a resend after a crash must never fill twice."""


class PaperBroker:
    """Simulated execution with a FillModel. Market orders fill on submit; limit orders rest
    until a later ``on_bar`` touches them. A client_id is accepted once, ever: a second
    submit with an id that was filled, is open, or was cancelled raises DuplicateOrderError,
    so a resend can neither fill twice nor revive a cancelled order."""

    remote = False     # a simulated venue inside the process

    def __init__(self, fill_model: FillModel) -> None:
        self.fill_model = fill_model
        self._open: dict[str, OrderRequest] = {}   # insertion order = submission order
        self._seen: set[str] = set()

    def submit(self, order: OrderRequest, ref_price: float, ts: int) -> OrderResult:
        """Market: filled at once. Limit: rests (status open, no fill); it is not checked
        against the bar it was decided on — only bars passed to ``on_bar`` afterwards can fill
        it. DuplicateOrderError for a client id seen before."""
        if order.client_id in self._seen:
            raise DuplicateOrderError(f"client_id {order.client_id!r} was already submitted")
        if order.type == "market":
            fill = self.fill_model.market_fill(order, ref_price, ts)   # validates first
            self._seen.add(order.client_id)
            return OrderResult(order.client_id, "filled", fills=[fill])
        self._seen.add(order.client_id)
        self._open[order.client_id] = order
        return OrderResult(order.client_id, "open")

    def restore(self, open_orders: list[dict[str, Any]],
                ref_price: float | None) -> dict[str, OrderResult]:
        """Resting limit orders live on in the state: rest them here again. Nothing about
        them changed, so nothing is returned."""
        for o in open_orders:
            if o["type"] == "limit" and o["status"] == "open":
                self.submit(OrderRequest(o["client_id"], o["symbol"], o["side"], o["qty"],
                                         "limit", o["limit_price"], o["reason"]),
                            ref_price or o["limit_price"], o["bar_ts"])
        return {}

    def poll(self, open_orders: list[dict[str, Any]]) -> dict[str, OrderResult]:
        """Nothing to ask: resting orders fill through ``on_bar``."""
        return {}

    def fit(self, order: OrderRequest, ref_price: float) -> tuple[OrderRequest | None, str]:
        """The simulated venue takes any valid order as it is."""
        return order, ""

    def rules(self) -> MarketRules:
        return NO_RULES

    def account(self) -> Balance | None:
        """No account outside the state."""
        return None

    def close(self) -> None:
        """Nothing held outside the process."""

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
