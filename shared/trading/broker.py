"""The one interface the trading engine sends orders through: the paper broker (simulated
fills, shared/trading/broker_paper.py) and the live broker (a real exchange through ccxt,
shared/trading/broker_live.py) both implement it, so the engine has no paper/live branches —
only ``remote``, which says whether an order leaves the process."""

from __future__ import annotations

from typing import Any, Protocol

from shared.market.bars import Bar
from shared.trading.types import Balance, Fill, MarketRules, OrderRequest, OrderResult


class Broker(Protocol):
    """Where orders go.

    ``remote`` True: orders leave the process (a live exchange). The engine then commits each
    order's row (fsynced) *before* ``submit``, so a crash between the two can never lose an
    order that was sent; a remote broker also never resends a client id it may have placed.
    """

    remote: bool

    def submit(self, order: OrderRequest, ref_price: float, ts: int) -> OrderResult:
        """Place ``order`` (market orders against ``ref_price``, the decided bar's close, at
        bar time ``ts`` in ms); the result has every fill of the order so far."""
        ...

    def on_bar(self, bar: Bar) -> list[Fill]:
        """Fills of resting orders that ``bar`` reached (a simulated venue; a live one
        returns [] — its fills come with order look-ups)."""
        ...

    def restore(self, open_orders: list[dict[str, Any]],
                ref_price: float | None) -> dict[str, OrderResult]:
        """After a restart: take back the orders the state left without a final status (rows
        of ``TradingState.open_orders``). Returns what is known now about each order whose
        status or fills changed, by client id."""
        ...

    def poll(self, open_orders: list[dict[str, Any]]) -> dict[str, OrderResult]:
        """While running: what is known now about each order the state has not closed (rows
        of ``TradingState.open_orders``), by client id; a simulated venue returns {} (its
        resting orders fill through ``on_bar``)."""
        ...

    def fit(self, order: OrderRequest, ref_price: float) -> tuple[OrderRequest | None, str]:
        """``order`` as the venue will accept it (quantity to the lot step and within the
        free balance, price to the tick, …) and a note of what changed; (None, why) when
        nothing acceptable remains. ``ref_price``: the decided bar's close."""
        ...

    def rules(self) -> MarketRules:
        """The market's order rules (``NO_RULES`` for a simulated venue). BrokerError-like
        exceptions when a remote venue cannot be asked."""
        ...

    def account(self) -> Balance | None:
        """The venue account's holdings; None when the venue is this process (paper: the
        state's cash and position are the only truth)."""
        ...

    def close(self) -> None:
        """Release what the broker holds outside the process (live: its HTTP session)."""
        ...
