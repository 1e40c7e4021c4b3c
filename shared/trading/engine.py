"""One bar's decision and its execution: strategy → risk → order → fills → durable record.

No bus and no clock in here: the live bot calls ``Trader.on_bar`` when a bar's prediction
arrives (or its wait runs out), and a backtest can call it with bars from a file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from shared.trading.broker_paper import PaperBroker
from shared.trading.fills import FillModel

from shared.config import Config
from shared.market.bars import Bar, symbol_slug
from shared.storage.trading_state import TradingDB
from shared.trading.risk import RiskLimits, RiskManager, RiskState
from shared.trading.strategy import StrategyParams, decide
from shared.trading.types import Fill, Intent, OrderRequest, Prediction

log = logging.getLogger("bdt.trader")


class LiveOrders(Protocol):
    """The live broker's surface the trader needs (shared.broker_live.LiveBroker)."""

    def submit(self, order: OrderRequest) -> Any: ...

    def reconcile(self, client_ids: list[str]) -> dict[str, Any]: ...


@dataclass
class Decision:
    bar_ts: int
    action: str           # hold | buy | sell
    target_qty: float
    qty: float            # ordered (0 when holding)
    reason: str
    fills: list[Fill]


class Trader:
    def __init__(self, cfg: Config, db: TradingDB, symbol: str, timeframe: int,
                 live: LiveOrders | None = None) -> None:
        self.db, self.symbol, self.timeframe, self.live = db, symbol, timeframe, live
        self.params = StrategyParams.from_config(cfg)
        self.fill_model = FillModel.from_config(cfg)
        self.paper = PaperBroker(self.fill_model)
        self.position = db.position(symbol)
        self.cash: float = db.get("cash", cfg.get("paper.starting_cash"))
        saved = db.get("risk_state")
        state = RiskState.from_dict(saved) if saved else RiskState()
        self.risk = RiskManager(RiskLimits.from_config(cfg), state, timeframe,
                                qty_step=self.params.qty_step)
        self.last_close: float | None = db.get("last_close")
        self.last_volatility: float | None = db.get("last_volatility")
        self.last_bar_ts: int | None = db.get("last_bar_ts")
        # the newest decided bar: only bars at or before it need the database's replay check
        self.decided_through: int | None = db.last_decided_ts(symbol)
        self.trade_start_realized: float = db.get("trade_start_realized",
                                                  self.position.realized_pnl)
        self._restore_open_orders()

    def _restore_open_orders(self) -> None:
        """Resting paper limits live on in the database; live orders are asked about."""
        pending = self.db.open_orders()
        if self.live is not None and pending:
            results = self.live.reconcile([o["client_id"] for o in pending])
            with self.db.transaction() as conn:
                for client_id, result in results.items():
                    self.cash = self.db.record_fills(conn, self.position, self.cash,
                                                     self._unbooked(client_id, result.fills))
                    self.db.set_order_status(client_id, result.status, result.exchange_id,
                                             result.error, conn)
            log.info("reconciled %d live order(s) with the exchange", len(results))
            return
        for o in pending:
            if o["type"] == "limit" and o["status"] == "open":
                self.paper.submit(OrderRequest(o["client_id"], o["symbol"], o["side"], o["qty"],
                                               "limit", o["limit_price"], o["reason"]),
                                  self.last_close or o["limit_price"], o["bar_ts"])

    # --- figures ---------------------------------------------------------------------------
    def equity(self, mark: float | None = None) -> float:
        mark = mark if mark is not None else (self.last_close or self.position.avg_price)
        return self.cash + self.position.qty * mark

    def today_pnl(self) -> float:
        start = self.risk.state.day_start_equity
        return 0.0 if start is None else self.equity() - start

    # --- one bar ---------------------------------------------------------------------------
    def on_bar(self, bar: Bar, prediction: Prediction | None, prediction_age_s: float,
               expected_model_version: str | None, note: str = "") -> Decision | None:
        """Decide and execute for ``bar``; None when it was already decided (a replay)."""
        planned = self.decide(bar, prediction, prediction_age_s, expected_model_version, note)
        return None if planned is None else self.execute(bar, *planned, prediction)

    def decide(self, bar: Bar, prediction: Prediction | None, prediction_age_s: float,
               expected_model_version: str | None, note: str = "") -> tuple[Intent, str] | None:
        """Strategy then risk for ``bar``: the approved intent and its reason, or None when the
        bar was already decided (a replay). Resting limit orders the bar touched are booked
        first, because they change the position being decided on."""
        if self.decided_through is not None and bar.ts <= self.decided_through \
                and self.db.decided(self.symbol, bar.ts):
            return None
        resting = self.paper.on_bar(bar)
        if resting:
            with self.db.transaction() as conn:
                self._book(conn, resting, bar)
        equity = self.equity(bar.close)
        self.risk.on_bar(bar, equity)
        if prediction is not None:
            self.last_volatility = prediction.volatility
        intent = decide(bar, prediction, self.position.copy(), equity, self.params,
                        self.fill_model.cost_per_side(), self.timeframe, self.last_volatility)
        approved, vetoes = self.risk.review(
            intent, position=self.position.copy(), bar=bar, prediction=prediction,
            prediction_age_s=prediction_age_s, expected_model_version=expected_model_version,
            equity=equity)
        return approved, "; ".join(filter(None, [note, intent.reason, *vetoes]))

    def flatten(self, reason: str, nonce: str) -> Decision | None:
        """Operator's flatten: close the position now at the last price. ``nonce`` makes the
        client id unique (a bar's own decision already owns the bar's id)."""
        if self.position.is_flat or self.last_close is None:
            return None
        fake = Bar(self.symbol, self.last_bar_ts or 0, self.last_close, self.last_close,
                   self.last_close, self.last_close, 0.0)
        return self.execute(fake, Intent(0.0, reason), reason, None, id_suffix=f"-f{nonce}")

    def execute(self, bar: Bar, intent: Intent, reason: str, prediction: Prediction | None,
                id_suffix: str = "") -> Decision:
        """Order what ``intent`` needs and record the decision, fills, state and equity in one
        transaction (fsynced when it holds an order or a fill)."""
        record = not id_suffix       # an operator action is not the bar's decision
        step = self.params.qty_step
        delta = round((intent.target_qty - self.position.qty) / step) * step
        order = None
        if abs(delta) >= step:
            order = OrderRequest(f"bdt-{symbol_slug(self.symbol)}-{bar.ts}{id_suffix}", self.symbol,
                                 "buy" if delta > 0 else "sell", abs(delta), intent.order_type,
                                 intent.limit_price, reason)
        fills: list[Fill] = []
        if order is not None and self.live is not None:
            fills = self._send_live(order, bar)
        with self.db.transaction(money=order is not None or bool(fills)) as conn:
            if order is not None and self.live is None:
                fills = self.paper.submit(order, bar.close, bar.ts)
                self.db.insert_order(order, bar.ts, "filled" if fills else "open", conn)
                self._book(conn, fills, bar)
            elif fills:
                self._book(conn, fills, bar)
            self.last_close, self.last_bar_ts = bar.close, bar.ts
            self.db.put_many({"last_close": bar.close, "last_bar_ts": bar.ts,
                              "last_volatility": self.last_volatility,
                              "risk_state": self.risk.state.to_dict()}, conn)
            action = "hold" if order is None else order.side
            if record:
                pred = None if prediction is None else {
                    "expected_return": prediction.expected_return, "p_up": prediction.p_up,
                    "volatility": prediction.volatility, "model_version": prediction.model_version}
                self.db.record_decision(conn, self.symbol, bar.ts, bar.close, pred, action,
                                        intent.target_qty, reason)
                self.decided_through = max(self.decided_through or bar.ts, bar.ts)
            value = self.position.qty * bar.close
            self.db.record_equity(conn, bar.ts, self.cash + value, self.cash, value)
        return Decision(bar.ts, action, intent.target_qty, order.qty if order else 0.0, reason,
                        fills)

    def _book(self, conn: Any, fills: list[Fill], bar: Bar) -> None:
        """Apply fills. A trade is a round trip from flat to flat: its P&L, both fees included,
        feeds the consecutive-loss counter when the position closes (or flips)."""
        for fill in fills:
            before = self.position.qty
            if not before:                     # a trade begins: its P&L counts from here
                self.trade_start_realized = self.position.realized_pnl
            self.cash = self.db.record_fills(conn, self.position, self.cash, [fill])
            after = self.position.qty
            if before and (not after or after * before < 0):          # closed or flipped
                self.risk.on_trade_closed(self.position.realized_pnl - self.trade_start_realized,
                                          bar.ts)
                self.trade_start_realized = self.position.realized_pnl
            self.db.put("trade_start_realized", self.trade_start_realized, conn)
            if fill.liquidity == "maker":
                self.db.set_order_status(fill.client_id, "filled", conn=conn)

    def _unbooked(self, client_id: str, fills: list[Fill]) -> list[Fill]:
        """The exchange reports an order's whole fill list every time: book only the new ones."""
        return list(fills)[self.db.fill_count(client_id):]

    def _send_live(self, order: OrderRequest, bar: Bar) -> list[Fill]:
        """Two steps: the order row is committed as 'sent' before it leaves the process; the
        broker itself asks the exchange before sending, so a resend can never fill twice."""
        if self.db.order_exists(order.client_id):
            return []     # decided and sent before a crash: reconciled at start, never resent
        with self.db.transaction() as conn:      # fsynced before the order leaves
            self.db.insert_order(order, bar.ts, "sent", conn)
        assert self.live is not None
        result = self.live.submit(order)
        self.db.set_order_status(order.client_id, result.status, result.exchange_id, result.error)
        if result.error:
            log.warning("order %s: %s (%s)", order.client_id, result.status, result.error)
        return self._unbooked(order.client_id, result.fills)
