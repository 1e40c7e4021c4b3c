"""The trading engine: one bar's decision and its execution — strategy → risk → order →
broker → fills → state.

One implementation for live and batch (NautilusTrader's idea): the bot drives it with the
durable state and the paper or live broker when a bar's prediction arrives (or its wait runs
out); a backtest drives it with ``MemoryState`` and the paper broker. No bus and no clock in
here, and no paper/live branch: the broker interface (shared.trading.broker) hides the venue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared.config import Config
from shared.market.bars import Bar, symbol_slug
from shared.trading.broker import Broker
from shared.trading.broker_paper import PaperBroker
from shared.trading.fills import FillModel
from shared.trading.risk import RiskLimits, RiskManager, RiskState
from shared.trading.state import TradingState
from shared.trading.strategies import Strategy, strategy_from_config
from shared.trading.types import Fill, Intent, OrderRequest, OrderResult, Prediction, apply_fill

log = logging.getLogger("bdt.engine")


@dataclass
class Decision:
    bar_ts: int
    action: str           # hold | buy | sell
    target_qty: float
    qty: float            # ordered (0 when holding)
    reason: str
    fills: list[Fill]


class TradingEngine:
    """Decides and executes bar by bar for one symbol, recording into ``state``.

    ``state``: the durable TradingDB (the bot) or a MemoryState (backtests). ``broker``: where
    orders go; the paper broker with the configured fill model by default. Everything the
    engine knows survives a restart through ``state`` (position, cash, risk state, open orders).
    """

    def __init__(self, cfg: Config, state: TradingState, symbol: str, timeframe: int,
                 broker: Broker | None = None, strategy: Strategy | None = None) -> None:
        self.state, self.symbol, self.timeframe = state, symbol, timeframe
        self.strategy: Strategy = strategy or strategy_from_config(cfg)
        self.fill_model = FillModel.from_config(cfg)
        self.broker: Broker = broker or PaperBroker(self.fill_model)
        self.position = state.position(symbol)
        self.cash: float = state.get("cash", cfg.get("paper.starting_cash"))
        saved = state.get("risk_state")
        risk_state = RiskState.from_dict(saved) if saved else RiskState()
        self.risk = RiskManager(RiskLimits.from_config(cfg), risk_state, timeframe,
                                qty_step=self.strategy.qty_step)
        self.last_close: float | None = state.get("last_close")
        self.last_volatility: float | None = state.get("last_volatility")
        self.last_bar_ts: int | None = state.get("last_bar_ts")
        # the newest decided bar: only bars at or before it need the database's replay check
        self.decided_through: int | None = state.last_decided_ts(symbol)
        self.trade_start_realized: float = state.get("trade_start_realized",
                                                  self.position.realized_pnl)
        self._restore_open_orders()

    def _restore_open_orders(self) -> None:
        """Orders the state left without a final status go back to the broker (a resting paper
        limit rests again; a live order is asked about), and what changed is booked."""
        pending = self.state.open_orders()
        if not pending:
            return
        results = self.broker.restore(pending, self.last_close)
        if results:
            with self.state.transaction() as conn:
                for client_id, result in results.items():
                    self._book(conn, self._unbooked(client_id, result.fills), None)
                    self.state.set_order_status(client_id, result.status, result.exchange_id,
                                             result.error, conn)
            log.info("reconciled %d order(s) with the broker", len(results))

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
                and self.state.decided(self.symbol, bar.ts):
            return None
        resting = self.broker.on_bar(bar)
        if resting:
            with self.state.transaction() as conn:
                self._book(conn, resting, bar)
        equity = self.equity(bar.close)
        self.risk.on_bar(bar, equity)
        if prediction is not None:
            self.last_volatility = prediction.volatility
        intent = self.strategy.decide(bar, prediction, self.position.copy(), equity,
                                      self.fill_model.cost_per_side(), self.timeframe,
                                      self.last_volatility)
        approved, vetoes = self.risk.review(
            intent, position=self.position.copy(), bar=bar, prediction=prediction,
            prediction_age_s=prediction_age_s, expected_model_version=expected_model_version,
            equity=equity, requires_prediction=self.strategy.needs_prediction)
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
        """Order what ``intent`` needs and record the decision, order status, fills, state and
        equity in one transaction (fsynced when it holds an order or a fill). A remote broker's
        order row is committed before the order leaves the process."""
        record = not id_suffix       # an operator action is not the bar's decision
        step = self.strategy.qty_step
        delta = round((intent.target_qty - self.position.qty) / step) * step
        order = None
        if abs(delta) >= step:
            order = OrderRequest(f"bdt-{symbol_slug(self.symbol)}-{bar.ts}{id_suffix}", self.symbol,
                                 "buy" if delta > 0 else "sell", abs(delta), intent.order_type,
                                 intent.limit_price, reason)
        result, fills = self._send(order, bar) if order is not None else (None, [])
        with self.state.transaction(money=order is not None or bool(fills)) as conn:
            if result is not None and self.broker.remote:
                self.state.set_order_status(result.client_id, result.status, result.exchange_id,
                                         result.error, conn)
            elif result is not None:
                self.state.insert_order(order, bar.ts, result.status, conn)
            self._book(conn, fills, bar)
            self.last_close, self.last_bar_ts = bar.close, bar.ts
            self.state.save_bar(conn, bar.close, bar.ts, self.last_volatility, self.risk.state)
            action = "hold" if order is None else order.side
            if record:
                self.state.record_decision(conn, self.symbol, bar.ts, bar.close, prediction,
                                           action, intent.target_qty, reason)
                self.decided_through = max(self.decided_through or bar.ts, bar.ts)
            value = self.position.qty * bar.close
            self.state.record_equity(conn, bar.ts, self.cash + value, self.cash, value)
        return Decision(bar.ts, action, intent.target_qty, order.qty if order else 0.0, reason,
                        fills)

    def _send(self, order: OrderRequest, bar: Bar) -> tuple[OrderResult | None, list[Fill]]:
        """Submit ``order``; (the broker's answer, the fills not yet booked). A remote order
        goes in two steps: its row is committed as 'sent' (fsynced) before it leaves the
        process, and the broker asks the venue before sending, so a resend never fills twice;
        one decided and sent before a crash is reconciled at start, never resent."""
        if self.broker.remote:
            if self.state.order_exists(order.client_id):
                return None, []
            with self.state.transaction() as conn:
                self.state.insert_order(order, bar.ts, "sent", conn)
        result = self.broker.submit(order, bar.close, bar.ts)
        if result.error:
            log.warning("order %s: %s (%s)", order.client_id, result.status, result.error)
        return result, self._unbooked(order.client_id, result.fills)

    def _book(self, conn: Any, fills: list[Fill], bar: Bar | None) -> None:
        """Apply fills to the position and cash and record them. A trade is a round trip from
        flat to flat: its P&L, both fees included, feeds the consecutive-loss counter when the
        position closes (or flips) — at the bar's time, or the fill's when no bar is at hand
        (fills found while reconciling after a restart)."""
        for fill in fills:
            before = self.position.qty
            if not before:                     # a trade begins: its P&L counts from here
                self.trade_start_realized = self.position.realized_pnl
            realized = apply_fill(self.position, fill, fill.ts)
            signed_value = fill.qty * fill.price * (1 if fill.side == "buy" else -1)
            self.cash = self.cash - signed_value - fill.fee
            self.state.record_fill(conn, fill, realized)
            after = self.position.qty
            if before and (not after or after * before < 0):          # closed or flipped
                self.risk.on_trade_closed(self.position.realized_pnl - self.trade_start_realized,
                                          bar.ts if bar is not None else fill.ts)
                self.trade_start_realized = self.position.realized_pnl
            if fill.liquidity == "maker" and not self.broker.remote:
                self.state.set_order_status(fill.client_id, "filled", conn=conn)
        if fills:
            self.state.save_position(conn, self.position)
            self.state.put_many({"cash": self.cash,
                              "trade_start_realized": self.trade_start_realized}, conn)

    def _unbooked(self, client_id: str, fills: list[Fill]) -> list[Fill]:
        """The exchange reports an order's whole fill list every time: book only the new ones."""
        return list(fills)[self.state.fill_count(client_id):]
