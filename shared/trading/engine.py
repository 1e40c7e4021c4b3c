"""The trading engine: one bar's decision and its execution — strategy → risk → order →
broker → fills → state.

One implementation for live and batch (NautilusTrader's idea): the bot drives it with the
durable state and the paper or live broker when a bar's prediction arrives (or its wait runs
out); a backtest drives it with ``MemoryState`` and the paper broker. No bus in here, and no
paper/live branch: the broker interface (shared.trading.broker) hides the venue.

The book must equal the venue's account. So: an order is booked only from fills that add up to
what it filled, in the same transaction as its status; an order not final is asked about on
every tick (``tick``) and, until it is resolved, nothing is opened; a live book starts from the
exchange's balances and is compared with them while running — when the two disagree beyond
``bot.balance_tolerance`` opening is refused and an alert raised (``alerts``, which the bot
publishes). A write that fails mid-bar leaves the memory as the state committed it.

Longer than this project's ~400-line rule on purpose: every path an order takes — decided,
sent, polled, reconciled after a restart, booked — is here, in one place, so that the live bot
and the backtest cannot drift apart (freqtrade's warning, DESIGN §8).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

from shared.config import Config
from shared.market.bars import Bar, symbol_slug
from shared.trading.account import BuyingPower, day_pnl, fit_to_account
from shared.trading.account import equity as account_equity
from shared.trading.broker import Broker
from shared.trading.broker_paper import PaperBroker
from shared.trading.fills import FillModel
from shared.trading.lots import lots, lots_qty
from shared.trading.risk import RiskLimits, RiskManager, RiskState
from shared.trading.state import FINAL_STATUSES, UNRESOLVED_STATUSES, TradingState
from shared.trading.strategies import Strategy, strategy_from_config
from shared.trading.types import (
    NO_RULES,
    Balance,
    Fill,
    Intent,
    MarketRules,
    OrderRequest,
    OrderResult,
    Position,
    Prediction,
    apply_fill,
    client_order_id,
)

log = logging.getLogger("bdt.engine")


@dataclass
class Decision:
    bar_ts: int
    action: str           # hold | buy | sell
    target_qty: float
    qty: float            # ordered (0 when holding)
    reason: str
    fills: list[Fill]
    limited: str = ""     # the rule that reduced or refused the order (account.BUYING_POWER, …)


class TradingEngine:
    """Decides and executes bar by bar for one symbol, recording into ``state``.

    ``state``: the durable TradingDB (the bot) or a MemoryState (backtests). ``broker``: where
    orders go; the paper broker with the configured fill model by default. Everything the
    engine knows survives a restart through ``state`` (position, cash, risk state, open orders).
    ``alerts``: what went wrong that an operator must hear about, as ``alert`` event fields
    (alert, severity, message, figures); the caller takes them out and publishes them.
    """

    def __init__(self, cfg: Config, state: TradingState, symbol: str, timeframe: int,
                 broker: Broker | None = None, strategy: Strategy | None = None) -> None:
        self.state, self.symbol, self.timeframe = state, symbol, timeframe
        self.strategy: Strategy = strategy or strategy_from_config(cfg)
        self.fill_model = FillModel.from_config(cfg)
        self.broker: Broker = broker or PaperBroker(self.fill_model)
        self.starting_cash: float = cfg.get("paper.starting_cash")
        bot = cfg.section("bot")
        self.tolerance: float = bot["balance_tolerance"]
        self.poll_interval_s: float = bot["poll_interval_s"]
        self.balance_refresh_s: float = bot["balance_refresh_s"]
        self.order_alert_s: float = bot["order_alert_s"]
        self.risk = RiskManager(RiskLimits.from_config(cfg), RiskState(), timeframe,
                                qty_step=self.strategy.qty_step)
        self.alerts: list[dict[str, Any]] = []
        self.blocked: str | None = None          # why opening is refused (book ≠ venue)
        self._blocked_kind: str | None = None
        self.exchange_balance: Balance | None = None
        self.rules: MarketRules = NO_RULES
        self._alerted: set[str] = set()
        self._next_poll = self._next_sync = 0.0
        self._load()
        self._load_rules()
        self._restore_open_orders()
        self.sync_account()

    def _load(self) -> None:
        """Everything kept in memory, as the state has committed it: at start, and after a
        transaction failed (its changes to memory must not outlive its rollback)."""
        s = self.state
        self.position: Position = s.position(self.symbol)
        self.cash: float = s.get("cash", self.starting_cash)
        saved = s.get("risk_state")
        self.risk.state = RiskState.from_dict(saved) if saved else RiskState()
        self.last_close: float | None = s.get("last_close")
        self.last_volatility: float | None = s.get("last_volatility")
        self.last_bar_ts: int | None = s.get("last_bar_ts")
        # the newest decided bar: only bars at or before it need the database's replay check
        self.decided_through: int | None = s.last_decided_ts(self.symbol)
        self.trade_start_realized: float = s.get("trade_start_realized",
                                                 self.position.realized_pnl)
        self.fees_excluded: dict[str, float] = dict(s.get("fees_excluded") or {})
        # orders not final, by client id (rows of state.open_orders)
        self.pending: dict[str, dict[str, Any]] = {o["client_id"]: o for o in s.open_orders()}

    def _load_rules(self) -> None:
        try:
            self.rules = self.broker.rules()
        except Exception as exc:         # a remote venue out of reach: asked again on tick
            log.warning("market rules not loaded: %s", exc)

    def _restore_open_orders(self) -> None:
        """Orders the state left without a final status go back to the broker (a resting paper
        limit rests again; a live order is asked about), and what changed is booked."""
        if self.pending:
            asked = len(self.pending)
            self._apply(self.broker.restore(list(self.pending.values()), self.last_close))
            log.info("reconciled %d order(s) with the broker; %d not final", asked,
                     len(self.pending))

    # --- figures ---------------------------------------------------------------------------
    def equity(self, mark: float | None = None) -> float:
        """``account.equity`` at ``mark`` (default: the last close, else the entry price)."""
        mark = mark if mark is not None else (self.last_close or self.position.avg_price)
        return account_equity(self.cash, self.position.qty, mark)

    def today_pnl(self) -> float | None:
        """``account.day_pnl``: equity less the day's starting equity; None before a bar."""
        return day_pnl(self.equity(), self.risk.state.day_start_equity)

    def _tradable(self, price: float) -> Position:
        """The position as decisions see it (a copy): a remainder the venue would not trade
        (dust after fees, ``MarketRules.dust``; none on paper) is flat, so it neither blocks
        an entry nor asks for an exit."""
        position = self.position.copy()
        if position.qty and abs(position.qty) <= self.rules.dust(price):
            return Position(self.symbol, realized_pnl=position.realized_pnl)
        return position

    # --- one bar ---------------------------------------------------------------------------
    def on_bar(self, bar: Bar, prediction: Prediction | None, prediction_age_s: float,
               expected_model_version: str | None, note: str = "") -> Decision | None:
        """Decide and execute for ``bar``; None when it was already decided (a replay). The
        per-bar step in one call; the bot calls its two halves apart to time them."""
        planned = self.decide(bar, prediction, prediction_age_s, expected_model_version, note)
        return None if planned is None else self.execute(bar, *planned, prediction)

    def decide(self, bar: Bar, prediction: Prediction | None, prediction_age_s: float,
               expected_model_version: str | None, note: str = "") -> tuple[Intent, str] | None:
        """Strategy then risk for ``bar``: the approved intent and its reason, or None when the
        bar was already decided (a replay). Orders not final are asked about and resting limit
        orders the bar touched are booked first, because they change the position being
        decided on; while an order stays unresolved, or the book disagrees with the venue,
        nothing is opened (reducing still is)."""
        if self.decided_through is not None and bar.ts <= self.decided_through \
                and self.state.decided(self.symbol, bar.ts):
            return None
        if self.pending:
            self.poll()
        resting = self.broker.on_bar(bar)
        if resting:
            with self._transaction() as conn:
                self._book(conn, resting, bar)
        equity = self.equity(bar.close)
        self.risk.on_bar(bar, equity)
        if prediction is not None:
            self.last_volatility = prediction.volatility
        position = self._tradable(bar.close)
        intent = self.strategy.decide(bar, prediction, position, equity,
                                      self.fill_model.cost_per_side(), self.timeframe,
                                      self.last_volatility)
        approved, vetoes = self.risk.review(
            intent, position=position.copy(), bar=bar, prediction=prediction,
            prediction_age_s=prediction_age_s, expected_model_version=expected_model_version,
            equity=equity, requires_prediction=self.strategy.needs_prediction)
        if self.pending or self.blocked:
            approved, vetoes = self._hold_opening(approved, position, vetoes)
        return approved, "; ".join(filter(None, [note, intent.reason, *vetoes]))

    def _hold_opening(self, intent: Intent, position: Position,
                      vetoes: list[str]) -> tuple[Intent, list[str]]:
        """Clamp a target that opens or adds exposure to the current position while an order
        is not final (its quantity may have traded: it counts as exposure) or the book and
        the venue disagree. A target that only reduces passes."""
        current = position.qty
        lo, hi = min(0.0, current), max(0.0, current)
        if lo <= intent.target_qty <= hi:
            return intent, vetoes
        why = []
        if self.pending:
            why.append(f"order(s) not final: {', '.join(self.pending)}")
        if self.blocked:
            why.append(self.blocked)
        reason = f"opening refused: {'; '.join(why)}"
        return replace(intent, target_qty=min(max(intent.target_qty, lo), hi)), [*vetoes, reason]

    def flatten(self, reason: str, nonce: str) -> Decision | None:
        """Operator's flatten: close the position now at the last price. ``nonce`` makes the
        client id unique (a bar's own decision already owns the bar's id)."""
        if self.last_close is None or self._tradable(self.last_close).is_flat:
            return None
        fake = Bar(self.symbol, self.last_bar_ts or 0, self.last_close, self.last_close,
                   self.last_close, self.last_close, 0.0)
        return self.execute(fake, Intent(0.0, reason), reason, None, id_suffix=f"-f{nonce}")

    def execute(self, bar: Bar, intent: Intent, reason: str, prediction: Prediction | None,
                id_suffix: str = "") -> Decision:
        """Order what ``intent`` needs — fitted to the venue's rules and balance first — and
        record the decision, order status, fills, state and equity in one transaction
        (fsynced when it holds an order or a fill). A remote broker's order row is committed
        before the order leaves the process. When the transaction fails, memory goes back to
        what the state holds and the error is raised; an order sent stays not final and is
        asked about on the next tick."""
        record = not id_suffix       # an operator action is not the bar's decision
        order, reason, limited = self.size_order(intent, bar, reason, id_suffix)
        result, fills = self._send(order, bar) if order is not None else (None, [])
        try:    # not _transaction(): this runs on every backtest bar, and a try costs nothing
            with self.state.transaction(money=order is not None or bool(fills)) as conn:
                if result is not None and self.broker.remote:
                    self._set_status(conn, result)
                elif result is not None and order is not None:
                    self.state.insert_order(order, bar.ts, result.status, conn)
                    if result.status not in FINAL_STATUSES:
                        self.pending[order.client_id] = _row(order, bar.ts, result.status)
                self._book(conn, fills, bar)
                self.last_close, self.last_bar_ts = bar.close, bar.ts
                self.state.save_bar(conn, bar.close, bar.ts, self.last_volatility,
                                    self.risk.state)
                action = "hold" if order is None else order.side
                if record:
                    self.state.record_decision(conn, self.symbol, bar.ts, bar.close, prediction,
                                               action, intent.target_qty, reason)
                    self.decided_through = max(self.decided_through or bar.ts, bar.ts)
                qty = self.position.qty
                self.state.record_equity(conn, bar.ts, account_equity(self.cash, qty, bar.close),
                                         self.cash, qty * bar.close)
        except BaseException as exc:
            _reload(self, exc)
            raise
        if fills:
            self._next_sync = 0.0        # compare with the venue on the next tick
        return Decision(bar.ts, action, intent.target_qty, order.qty if order else 0.0, reason,
                        fills, limited)

    def size_order(self, intent: Intent, bar: Bar, reason: str, id_suffix: str = ""
                   ) -> tuple[OrderRequest | None, str, str]:
        """The order ``intent`` needs after ``bar``, in whole lots of the strategy's
        ``qty_step`` (a position of n lots exits with exactly n lots), sized against the
        account's buying power (shared.trading.account) and fitted to the venue's rules.
        Returns (the order or None, the reason with what changed, the rule that reduced or
        refused it: "" when none did)."""
        if intent.target_qty == self.position.qty:      # most bars: hold, nothing to count
            return None, reason, ""
        step = self.strategy.qty_step
        delta = lots(intent.target_qty, step) - lots(self.position.qty, step)
        if delta == 0:
            return None, reason, ""
        wanted = OrderRequest(
            client_order_id(symbol_slug(self.symbol), bar.ts, id_suffix), self.symbol,
            "buy" if delta > 0 else "sell", lots_qty(abs(delta), step), intent.order_type,
            intent.limit_price, reason)
        limit = wanted.type == "limit"
        price = wanted.limit_price if limit else self.fill_model.buy_price(bar.close)
        fee = self.fill_model.fee_maker if limit else self.fill_model.fee_taker
        power = BuyingPower.of(self.cash, self.position.qty, list(self.pending.values()),
                               bar.close, fee)
        base, _, quote = self.symbol.partition("/")
        order, note, limited = fit_to_account(wanted, price or bar.close, fee, step, power,
                                              quote, base)
        if note:
            reason = f"{reason}; {note}"
        if order is not None:
            order, fitted = self.broker.fit(order, bar.close)
            if fitted:
                reason = f"{reason}; {fitted}"
        if order is not None and order.reason != reason:
            order = replace(order, reason=reason)
        return order, reason, limited

    def _send(self, order: OrderRequest, bar: Bar) -> tuple[OrderResult | None, list[Fill]]:
        """Submit ``order``; (the broker's answer, the fills not yet booked). A remote order
        goes in two steps: its row is committed as 'sent' (fsynced) before it leaves the
        process, and the broker asks the venue before sending, so a resend never fills twice;
        one decided and sent before a crash is reconciled at start, never resent."""
        if self.broker.remote:
            if self.state.order_exists(order.client_id):
                return None, []
            with self._transaction() as conn:
                self.state.insert_order(order, bar.ts, "sent", conn)
            self.pending[order.client_id] = _row(order, bar.ts, "sent")
        result = self.broker.submit(order, bar.close, bar.ts)
        if result.error:
            log.warning("order %s: %s (%s)", order.client_id, result.status, result.error)
        return result, self._unbooked(order.client_id, result.fills)

    # --- orders not final, and the venue's account -----------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Between bars (the bot calls it every loop; ``now`` is ``time.monotonic()``): every
        ``bot.poll_interval_s`` the orders not final are asked about, and every
        ``bot.balance_refresh_s`` the book is compared with the venue's account."""
        now = time.monotonic() if now is None else now
        if self.pending and now >= self._next_poll:
            self._next_poll = now + self.poll_interval_s
            self.poll()
        if now >= self._next_sync:
            self._next_sync = now + self.balance_refresh_s
            if self.rules is NO_RULES:
                self._load_rules()
            self.sync_account()

    def poll(self) -> None:
        """Ask the broker about every order not final and book what changed: its new fills
        and its status in one transaction. An order unresolved (sent, unknown, fills_pending)
        for longer than ``bot.order_alert_s`` raises one alert."""
        if not self.pending:
            return
        self._apply(self.broker.poll(list(self.pending.values())))
        now = time.time()
        for cid, row in self.pending.items():
            age = now - (row.get("created_at") or now)
            if row["status"] in UNRESOLVED_STATUSES and age >= self.order_alert_s \
                    and cid not in self._alerted:
                self._alerted.add(cid)
                self._alert("order_unresolved", "critical",
                            f"order {cid} ({row['side']} {row['qty']:g}) is still "
                            f"{row['status']} after {age:.0f} s: nothing is opened until it is "
                            f"resolved", client_id=cid, status=row["status"], age_s=round(age))

    def _apply(self, results: dict[str, OrderResult]) -> None:
        """Book what the broker now knows about orders not final: each order's new fills and
        its status together, with the risk state the fills changed, in one transaction."""
        new_fills = {cid: self._unbooked(cid, r.fills) for cid, r in results.items()
                     if cid in self.pending}
        changed = {cid: results[cid] for cid, fills in new_fills.items()
                   if fills or results[cid].status != self.pending[cid]["status"]}
        if not changed:
            return
        with self._transaction() as conn:
            for cid, result in changed.items():
                self._book(conn, new_fills[cid], None)
                self._set_status(conn, result)
            self.state.put("risk_state", self.risk.state.to_dict(), conn)
        for cid, result in changed.items():
            log.info("order %s is now %s (%d fill(s))%s", cid, result.status,
                     len(result.fills), f": {result.error}" if result.error else "")
        self._next_sync = 0.0            # compare with the venue on the next tick

    def sync_account(self) -> Balance | None:
        """Read the venue's account (None on paper, which has none) and hold the book to it.
        The first time a state meets an exchange account the book takes its balances (cash
        from the config is not money). After that, with no order in flight, the book's cash
        and position must match the account's quote and base totals within
        ``bot.balance_tolerance`` × equity: beyond it opening is refused (``blocked``) and an
        alert raised, until they match again or the operator adopts the exchange's figures
        (``adopt_exchange``). An account that cannot be read blocks opening only until the
        first successful read."""
        try:
            balance = self.broker.account()
        except Exception as exc:
            log.warning("exchange account not read: %s", exc)
            if self.exchange_balance is None:
                self._block("exchange_unreachable", f"the exchange's balances are unknown "
                                                    f"({exc})")
            return None
        if balance is None:
            return None
        self.exchange_balance = balance
        if not self.state.get("exchange_synced"):
            problem = self.adopt_exchange("first start against this exchange account", balance)
            if problem:
                self._block("exchange_unreachable", f"the book is not yet the exchange's: "
                                                    f"{problem}")
            return balance
        if self.pending:                 # fills in flight: the two cannot agree yet
            return balance
        problem = self._disagreement(balance)
        if problem:
            self._block("book_mismatch", problem, balance)
        elif self.blocked:
            log.warning("book and exchange agree again: opening allowed")
            self.blocked = self._blocked_kind = None
        return balance

    def adopt_exchange(self, why: str, balance: Balance | None = None) -> str | None:
        """Take the venue's holdings as the book's: cash = the quote total, position = the
        base total (a changed position is priced at the last price; its entry time is
        unknown), and forget the drawdown peak and the day's start, which measured another
        equity. Returns why it could not (no venue account, orders in flight, no price)."""
        if self.pending:
            return f"orders not final ({', '.join(self.pending)}): resolve them first"
        if balance is None:
            try:
                balance = self.broker.account()
            except Exception as exc:
                return f"the exchange's balances are unknown ({exc})"
            if balance is None:
                return "no exchange account (paper trading)"
        p, qty = self.position, balance.base_total
        price = balance.price or self.last_close
        if not math.isclose(p.qty, qty, rel_tol=0.0, abs_tol=1e-12):
            if qty and not price:
                return "no price to value the exchange's position at"
            same_side = p.qty * qty > 0
            self.position = Position(self.symbol, qty, p.avg_price if same_side else
                                     (price or 0.0) if qty else 0.0,
                                     p.opened_ts if same_side else None, p.realized_pnl)
        old_cash, self.cash = self.cash, balance.quote_total
        self.risk.state.peak_equity, self.risk.state.day = 0.0, ""
        with self._transaction() as conn:
            self.state.save_position(conn, self.position)
            self.state.put_many({"cash": self.cash, "exchange_synced": time.time(),
                                 "risk_state": self.risk.state.to_dict()}, conn)
        log.warning("book set to the exchange's holdings (%s): cash %.2f → %.2f %s, %s %g → %g",
                    why, old_cash, self.cash, balance.quote, balance.base, p.qty, qty)
        self.blocked = self._blocked_kind = None
        return None

    def _disagreement(self, balance: Balance) -> str | None:
        price = balance.price or self.last_close or self.position.avg_price or 0.0
        equity = balance.quote_total + balance.base_total * price
        allowed = self.tolerance * max(equity, 1.0)
        d_cash = self.cash - balance.quote_total
        d_value = (self.position.qty - balance.base_total) * price
        if abs(d_cash) <= allowed and abs(d_value) <= allowed:
            return None
        return (f"book and exchange disagree beyond {allowed:.2f} {balance.quote}: cash "
                f"{self.cash:.2f} vs {balance.quote_total:.2f} {balance.quote}, {balance.base} "
                f"{self.position.qty:g} vs {balance.base_total:g}")

    def _block(self, kind: str, problem: str, balance: Balance | None = None) -> None:
        """Refuse opening because of ``problem``; alert once each time its ``kind`` (the
        alert's name) begins."""
        if kind != self._blocked_kind:
            figures = {"book_cash": self.cash, "book_qty": self.position.qty}
            if balance is not None:
                figures.update(exchange_cash=balance.quote_total,
                               exchange_qty=balance.base_total)
            self._alert(kind, "critical", f"opening refused: {problem}", **figures)
        self.blocked, self._blocked_kind = problem, kind

    def _alert(self, kind: str, severity: str, message: str, **figures: Any) -> None:
        log.error("%s: %s", kind, message)
        self.alerts.append({"alert": kind, "severity": severity, "message": message,
                            "figures": figures})

    # --- the book --------------------------------------------------------------------------
    def _transaction(self, money: bool = True) -> Any:
        return _Rollback(self, money)

    def _set_status(self, conn: Any, result: OrderResult) -> None:
        cid = result.client_id
        self.state.set_order_status(cid, result.status, result.exchange_id, result.error, conn)
        if result.status in FINAL_STATUSES:
            self.pending.pop(cid, None)
        elif cid in self.pending:
            self.pending[cid]["status"] = result.status

    def _book(self, conn: Any, fills: list[Fill], bar: Bar | None) -> None:
        """Apply fills to the position and cash and record them. A trade is a round trip from
        flat to flat (a remainder the venue would not trade counts as flat): its P&L, both
        fees included, feeds the consecutive-loss counter when the position closes (or
        flips) — at the bar's time, or the fill's when no bar is at hand (fills found while
        polling or reconciling after a restart). The cash pays the fee except its part paid in
        a third asset; a third-asset fee without a price is added up in ``fees_excluded``."""
        excluded = False
        for fill in fills:
            before = self.position.qty
            dust = self.rules.dust(fill.price)
            if abs(before) <= dust:            # a trade begins: its P&L counts from here
                self.trade_start_realized = self.position.realized_pnl
                if before:                     # the last trade's dust is not this one's start
                    self.position.opened_ts = None
            realized = apply_fill(self.position, fill, fill.ts)
            signed_value = fill.qty * fill.price * (1 if fill.side == "buy" else -1)
            self.cash = self.cash - signed_value - (fill.fee - fill.fee_asset_value)
            self.state.record_fill(conn, fill, realized)
            if fill.fee_asset and fill.fee_asset_qty and not fill.fee_asset_value:
                self.fees_excluded[fill.fee_asset] = \
                    self.fees_excluded.get(fill.fee_asset, 0.0) + fill.fee_asset_qty
                excluded = True
            after = self.position.qty
            if abs(before) > dust and (abs(after) <= dust or after * before < 0):
                self.risk.on_trade_closed(self.position.realized_pnl - self.trade_start_realized,
                                          bar.ts if bar is not None else fill.ts)
                self.trade_start_realized = self.position.realized_pnl
            if fill.liquidity == "maker" and not self.broker.remote:
                self.state.set_order_status(fill.client_id, "filled", conn=conn)
                self.pending.pop(fill.client_id, None)
        if fills:
            self.state.save_position(conn, self.position)
            values: dict[str, Any] = {"cash": self.cash,
                                      "trade_start_realized": self.trade_start_realized}
            if excluded:
                values["fees_excluded"] = self.fees_excluded
            self.state.put_many(values, conn)

    def _unbooked(self, client_id: str, fills: list[Fill]) -> list[Fill]:
        """The exchange reports an order's whole fill list every time: book only the new ones."""
        return list(fills)[self.state.fill_count(client_id):] if fills else []


class _Rollback:
    """The state's transaction; when it fails, the engine's memory is reloaded from the state
    (what the rollback left) before the error goes on."""

    def __init__(self, engine: TradingEngine, money: bool) -> None:
        self.engine, self.money = engine, money

    def __enter__(self) -> Any:
        self._cm = self.engine.state.transaction(money=self.money)
        return self._cm.__enter__()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        try:
            return bool(self._cm.__exit__(kind, exc, tb))
        finally:
            if kind is not None:
                _reload(self.engine, exc)


def _reload(engine: TradingEngine, exc: BaseException) -> None:
    log.error("a state transaction failed (%s: %s): memory reloaded from the state",
              type(exc).__name__, exc)
    engine._load()


def _row(order: OrderRequest, bar_ts: int, status: str) -> dict[str, Any]:
    """An order as ``TradingState.open_orders`` lists it."""
    return {"client_id": order.client_id, "symbol": order.symbol, "side": order.side,
            "qty": order.qty, "type": order.type, "limit_price": order.limit_price,
            "reason": order.reason, "bar_ts": bar_ts, "status": status,
            "created_at": time.time()}
