"""The trading domain shared by the live bot and the backtester: predictions as the bot
receives them, positions, order requests and fills. Plain data; no I/O."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
# What a broker can say about an order; FINAL ones (shared.trading.state) never change again.
ORDER_STATUSES = ("open", "filled", "partially_filled", "canceled", "rejected", "unknown", "sent")


@dataclass(frozen=True, slots=True)
class Prediction:
    symbol: str
    bar_time: int          # ts of the bar it was made on (ms)
    expected_return: float  # forward log return over the model's horizon
    p_up: float
    volatility: float       # per-bar return standard deviation (fraction)
    model_version: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prediction:
        """Validate a `predictions` message; ValueError names the first bad field."""
        def number(key: str) -> float:
            value = d.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ValueError(f"prediction field {key!r} must be a finite number, got {value!r}")
            return float(value)

        for key in ("symbol", "model_version"):
            if not isinstance(d.get(key), str) or not d[key]:
                raise ValueError(f"prediction field {key!r} must be a non-empty string")
        bar_time = d.get("bar_time")
        if isinstance(bar_time, bool) or not isinstance(bar_time, int):
            raise ValueError(f"prediction field 'bar_time' must be an integer, got {bar_time!r}")
        p_up, vol = number("p_up"), number("volatility")
        if not 0.0 <= p_up <= 1.0:
            raise ValueError(f"prediction field 'p_up' must be in [0, 1], got {p_up}")
        if vol <= 0:
            raise ValueError(f"prediction field 'volatility' must be positive, got {vol}")
        return cls(d["symbol"], bar_time, number("expected_return"), p_up, vol,
                   d["model_version"])


@dataclass(slots=True)
class Position:
    """Signed quantity (+ long, − short), average entry price, and when it was opened."""

    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    opened_ts: int | None = None      # bar ts of the entry
    realized_pnl: float = 0.0         # net of fees, since the position record began

    @property
    def is_flat(self) -> bool:
        return abs(self.qty) < 1e-12

    def unrealized(self, mark: float) -> float:
        return self.qty * (mark - self.avg_price)

    def copy(self) -> Position:
        # by hand, not dataclasses.replace: this runs twice a bar (~3 µs less each)
        return Position(self.symbol, self.qty, self.avg_price, self.opened_ts, self.realized_pnl)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_id: str        # unique and deterministic: a resend after a crash reuses it
    symbol: str
    side: str             # buy | sell
    qty: float            # > 0
    type: str = "market"
    limit_price: float | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"order side must be buy or sell, got {self.side!r}")
        if self.type not in ORDER_TYPES:
            raise ValueError(f"order type must be market or limit, got {self.type!r}")
        if not self.qty > 0:
            raise ValueError(f"order qty must be positive, got {self.qty}")
        if self.type == "limit" and not (self.limit_price and self.limit_price > 0):
            raise ValueError("a limit order needs a positive limit_price")


@dataclass(frozen=True, slots=True)
class Fill:
    client_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float            # in quote currency
    ts: int               # ms
    liquidity: str = "taker"   # taker | maker

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Intent:
    """What the strategy wants: a target position (signed qty) and why."""

    target_qty: float
    reason: str
    order_type: str = "market"
    limit_price: float | None = None
    tags: dict[str, Any] = field(default_factory=dict)


def apply_fill(position: Position, fill: Fill, ts: int) -> float:
    """Update ``position`` in place with ``fill``; returns the P&L it realized (net of fee)."""
    signed = fill.qty if fill.side == "buy" else -fill.qty
    realized = -fill.fee
    if position.is_flat or position.qty * signed > 0:           # open or add
        total = position.qty + signed
        position.avg_price = (position.avg_price * position.qty + fill.price * signed) / total
        position.qty = total
        if position.opened_ts is None:
            position.opened_ts = ts
    else:                                                     # reduce, close or flip
        closing = min(abs(signed), abs(position.qty))
        direction = 1.0 if position.qty > 0 else -1.0
        realized += closing * (fill.price - position.avg_price) * direction
        remaining = position.qty + signed
        if abs(remaining) < 1e-12:
            position.qty, position.avg_price, position.opened_ts = 0.0, 0.0, None
        elif remaining * position.qty > 0:
            position.qty = remaining
        else:                                                 # flipped through zero
            position.qty, position.avg_price, position.opened_ts = remaining, fill.price, ts
    position.realized_pnl += realized
    return realized


@dataclass(slots=True)
class OrderResult:
    """What a broker says about one order. ``fills`` are all of the order's fills so far
    (not only new ones). ``duplicate``: the venue already had this client id, so no new order
    was placed and the fills are the existing order's."""

    client_id: str
    status: str                       # one of ORDER_STATUSES
    exchange_id: str | None = None
    fills: list[Fill] = field(default_factory=list)
    error: str | None = None
    duplicate: bool = False

    @property
    def filled_qty(self) -> float:
        return sum(f.qty for f in self.fills)
