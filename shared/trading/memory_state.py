"""The trading state in memory: the ``TradingState`` interface with nothing durable, for
backtests (the same trading engine the bot drives, fed from the store). No transactions to
roll back: an error mid-bar ends the backtest, which keeps nothing anyway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.trading.risk import RiskState
from shared.trading.state import FINAL_STATUSES, prediction_record
from shared.trading.types import Fill, OrderRequest, Position, Prediction

# the fill fields a row leaves out when they hold these
_FILL_DEFAULTS = {"fee_asset": "", "fee_asset_qty": 0.0, "fee_asset_value": 0.0, "note": ""}


class MemoryState:
    """Rows are kept as the durable state keeps them, so reports and the parity check read
    both alike."""

    def __init__(self) -> None:
        self.account: dict[str, Any] = {}
        self.positions: dict[str, Position] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.fill_rows: list[dict[str, Any]] = []
        self.fills_by_order: dict[str, int] = {}
        self.equity_rows: list[dict[str, Any]] = []
        self.decision_rows: dict[tuple[str, int], dict[str, Any]] = {}
        self._risk: RiskState | None = None      # the engine's live object; copied on read

    @contextmanager
    def transaction(self, money: bool = True) -> Iterator[None]:
        yield None

    # --- account and position -------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        if key == "risk_state" and self._risk is not None:
            return self._risk.to_dict()
        return self.account.get(key, default)

    def put(self, key: str, value: Any, conn: Any = None) -> None:
        self.account[key] = value

    def put_many(self, items: dict[str, Any], conn: Any) -> None:
        self.account.update(items)

    def position(self, symbol: str) -> Position:
        saved = self.positions.get(symbol)
        return Position(symbol) if saved is None else saved.copy()

    def save_position(self, conn: Any, position: Position) -> None:
        self.positions[position.symbol] = position.copy()

    # --- orders and fills ------------------------------------------------------------------
    def order_exists(self, client_id: str) -> bool:
        return client_id in self.orders

    def insert_order(self, order: OrderRequest, bar_ts: int, status: str,
                     conn: Any = None) -> None:
        if order.client_id in self.orders:
            raise ValueError(f"order {order.client_id!r} exists already")
        self.orders[order.client_id] = {
            "client_id": order.client_id, "symbol": order.symbol, "side": order.side,
            "qty": order.qty, "type": order.type, "limit_price": order.limit_price,
            "reason": order.reason, "bar_ts": bar_ts, "status": status, "exchange_id": None,
            "error": None, "created_at": time.time()}

    def set_order_status(self, client_id: str, status: str, exchange_id: str | None = None,
                         error: str | None = None, conn: Any = None) -> None:
        row = self.orders[client_id]
        row.update(status=status, error=error,
                   exchange_id=exchange_id if exchange_id is not None else row["exchange_id"])

    def record_fill(self, conn: Any, fill: Fill, realized_pnl: float) -> None:
        """A row like the durable state's; the fee-asset fields and the note only when set
        (a backtest's paper fills never have them, and a long one keeps many rows)."""
        row = {"client_id": fill.client_id, "symbol": fill.symbol, "side": fill.side,
               "qty": fill.qty, "price": fill.price, "fee": fill.fee, "ts": fill.ts,
               "liquidity": fill.liquidity, "realized_pnl": realized_pnl}
        if fill.fee_asset or fill.note:
            row.update(fee_asset=fill.fee_asset, fee_asset_qty=fill.fee_asset_qty,
                       fee_asset_value=fill.fee_asset_value, note=fill.note)
        self.fill_rows.append(row)
        self.fills_by_order[fill.client_id] = self.fills_by_order.get(fill.client_id, 0) + 1

    def fill_count(self, client_id: str) -> int:
        return self.fills_by_order.get(client_id, 0)

    def open_orders(self) -> list[dict[str, Any]]:
        keys = ("client_id", "symbol", "side", "qty", "type", "limit_price", "reason", "bar_ts",
                "status", "created_at")
        return [{k: o[k] for k in keys} for o in self.orders.values()
                if o["status"] not in FINAL_STATUSES]

    # --- decisions and equity --------------------------------------------------------------
    def decided(self, symbol: str, bar_ts: int) -> bool:
        return (symbol, bar_ts) in self.decision_rows

    def last_decided_ts(self, symbol: str) -> int | None:
        return max((ts for s, ts in self.decision_rows if s == symbol), default=None)

    def save_bar(self, conn: Any, last_close: float, last_bar_ts: int,
                 last_volatility: float | None, risk: RiskState) -> None:
        """Kept by reference (no copy a bar): ``get`` reads them back."""
        self.account["last_close"], self.account["last_bar_ts"] = last_close, last_bar_ts
        self.account["last_volatility"] = last_volatility
        self._risk = risk

    def record_decision(self, conn: Any, symbol: str, bar_ts: int, close: float,
                        prediction: Prediction | None, action: str, target_qty: float,
                        reason: str) -> None:
        self.decision_rows.setdefault((symbol, bar_ts), {
            "bar_ts": bar_ts, "close": close, "action": action, "target_qty": target_qty,
            "reason": reason, "prediction": prediction_record(prediction),
            "created_at": time.time()})

    def record_equity(self, conn: Any, ts: int, equity: float, cash: float,
                      position_value: float) -> None:
        if self.equity_rows and self.equity_rows[-1]["ts"] == ts:
            self.equity_rows.pop()
        self.equity_rows.append({"ts": ts, "equity": equity, "cash": cash,
                                 "position_value": position_value})

    def fills(self, since_ts: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = [{**_FILL_DEFAULTS, **f, "reason": self.orders[f["client_id"]]["reason"]}
                for f in self.fill_rows if f["ts"] >= since_ts]
        return rows[-limit:]

    def equity_curve(self, since_ts: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        return [r for r in self.equity_rows if r["ts"] >= since_ts][-limit:]

    def decisions(self, since_ts: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = sorted((r for r in self.decision_rows.values() if r["bar_ts"] >= since_ts),
                      key=lambda r: r["bar_ts"])
        return [{k: r[k] for k in ("bar_ts", "close", "action", "target_qty", "reason",
                                   "prediction")} for r in rows[-limit:]]

    def checkpoint(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to release."""
