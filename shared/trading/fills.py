"""The fill model, shared by the paper broker and the backtester.

Fills are deliberately adverse: a market order pays half the spread plus slippage on top of
the reference price, then the taker fee; a limit order fills only when a bar trades at or
through its price, at the maker fee. No I/O and no clock: times are passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.config import Config
from shared.market.bars import Bar
from shared.trading.types import Fill, OrderRequest


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
        for name, below in (("fee_taker", 1.0), ("fee_maker", 1.0), ("spread", 1.0),
                            ("slippage", 0.5)):     # so a sell price stays > 0
            if getattr(self, name) >= below:
                raise ValueError(f"paper.{name} must be < {below:g}, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, cfg: Config) -> FillModel:
        s = cfg.section("paper")
        return cls(fee_taker=s["fee_taker"], fee_maker=s["fee_maker"], spread=s["spread"],
                   slippage=s["slippage"])

    def cost_per_side(self) -> float:
        """What one market order costs, as a fraction of notional: the strategy's hurdle."""
        return self.spread / 2 + self.slippage + self.fee_taker

    def buy_price(self, ref_price: float) -> float:
        """What a market buy against ``ref_price`` fills at: above it by half the spread
        plus the slippage."""
        return ref_price * (1 + self.spread / 2 + self.slippage)

    def sell_price(self, ref_price: float) -> float:
        """What a market sell against ``ref_price`` fills at (below it, mirrored)."""
        return ref_price * (1 - self.spread / 2 - self.slippage)

    def market_fill(self, order: OrderRequest, ref_price: float, ts: int) -> Fill:
        """Fill a market order at once: buy above ``ref_price``, sell below; taker fee."""
        if order.type != "market":
            raise ValueError(f"market_fill needs a market order, got {order.type!r}")
        _check_price("ref_price", ref_price)
        price = self.buy_price(ref_price) if order.side == "buy" \
            else self.sell_price(ref_price)
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
