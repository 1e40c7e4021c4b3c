"""The live order path: orders to a real exchange through ccxt's synchronous REST client.

Every order carries the caller's deterministic ``client_id`` as the exchange's client order id,
and the exchange is the only source of truth about it:

* before sending, the broker asks the exchange whether it already knows that client id. Binance
  refuses a duplicate client order id only while the first order is *open*; a filled market
  order's id can be reused, so without this check a resend after a crash could fill twice;
* when a send ends without an answer (timeout, reset, 5xx, unparsable reply), the order is never
  sent again: the broker asks the exchange by client id and returns what it finds, or status
  ``"unknown"`` — the engine asks again on every tick (``poll``), and at start (``restore``)
  for every order the database left without a final state; one the exchange still does not
  know after ``lost_after_s`` never reached it ("rejected");
* a request the exchange refused for its timestamp (-1021, outside the recvWindow) was not
  executed: ccxt's clock offset is measured again and the request sent once more;
* an order is reported with fills only when they add up to its filled amount; one done at the
  exchange whose trades lag or fail to load is "fills_pending" until they do (or, after
  ``fill_lookups`` look-ups, one fill from the order's own totals, marked in its note);
* a fill's quantity is what the account gained or gave: a fee taken in the base asset changes
  it; every fee is valued in the quote (a third asset such as BNB at its ticker price);
* the market's rules (lot step, quantity limits, tick, minimum notional) are read from the
  exchange's market data once; ``fit`` makes an order acceptable to them and to the free
  balance before the engine records it, and ``submit`` refuses one that breaks them (or
  Binance's client order id rule) without sending it.

Keys come from a JSON file (shared.trading.live_keys): the user's own, mode 0600 or stricter;
key material never reaches a log line, an exception or a repr. Not thread-safe: one broker per
thread, as the bot is synchronous. Longer than the ~400-line rule because the venue's
behaviours (look-ups that lag, fees in another asset, market rules, clock skew) each need their
answer beside the order call they concern.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import ccxt

from shared.market.bars import Bar
from shared.trading.live_keys import (  # noqa: F401 - BrokerError: the broker's errors
    _CREDENTIAL_OPTIONS,
    BrokerConfigError,
    BrokerError,
    _Redactor,
    load_keys,
)
from shared.trading.lots import clean_qty, to_step
from shared.trading.state import FINAL_STATUSES
from shared.trading.types import (
    CLIENT_ID_RULE,
    Balance,
    Fill,
    MarketRules,
    OrderRequest,
    OrderResult,
)

log = logging.getLogger("bdt.broker.live")


_DUPLICATE_MARKERS = ("Duplicate order sent",)     # Binance -2010 for a reused client id


class LiveBroker:
    """Places, queries and cancels ``symbol`` orders on ``exchange_id`` by client order id.

    ``exchange_options`` go to the ccxt constructor (``market.exchange_options``: e.g. ``urls``,
    ``timeout`` in ms, ``options.recvWindow`` or ``options.adjustForTimeDifference``) but cannot
    carry credentials or turn on ccxt's automatic request retries. After a send without an
    answer the order is looked up ``ack_lookups`` times, ``ack_lookup_delay_s`` apart, as an
    exchange may take a moment to show a new order. An order whose trades stay out of sight
    for ``fill_lookups`` look-ups after the exchange called it done is booked from its own
    totals; one the exchange still does not know ``lost_after_s`` seconds after its row was
    written never reached it (Binance refuses a request older than its recvWindow, at most
    60 s, so keep this above the recvWindow used).
    """

    def __init__(self, exchange_id: str, symbol: str, keys_file: Path, *,
                 exchange_options: dict[str, Any] | None = None, timeout_ms: int = 10_000,
                 ack_lookups: int = 3, ack_lookup_delay_s: float = 1.0, fill_lookups: int = 5,
                 lost_after_s: float = 90.0) -> None:
        self.exchange_id, self.symbol, self.keys_file = exchange_id, symbol, Path(keys_file)
        options = dict(exchange_options or {})
        bad = sorted(_CREDENTIAL_OPTIONS & options.keys())
        if bad:
            raise BrokerConfigError(f"exchange_options must not carry credentials "
                                    f"({', '.join(bad)}); they come from the keys file")
        if exchange_id not in ccxt.exchanges:
            raise BrokerConfigError(f"exchange {exchange_id!r} is unknown to ccxt")
        keys = load_keys(self.keys_file)            # before anything can touch the network
        self._redact = _Redactor(list(keys.values()), logging.getLogger("bdt.broker.ccxt"))
        # no silent resend, ever: ccxt's retry-on-failure would repeat a create_order
        ccxt_options = {**options.get("options", {}), "maxRetriesOnFailure": 0}
        if any(isinstance(v, dict) and v.get("maxRetriesOnFailure") for v in ccxt_options.values()):
            raise BrokerConfigError("exchange_options must not enable ccxt's maxRetriesOnFailure")
        self._exchange = getattr(ccxt, exchange_id)({
            "timeout": timeout_ms, **options, "options": ccxt_options, "enableRateLimit": True,
            "verbose": False, **keys,
        })
        self._exchange.logger = self._redact
        del keys
        self.ack_lookups, self.ack_lookup_delay_s = max(1, ack_lookups), ack_lookup_delay_s
        self.fill_lookups, self.lost_after_s = max(1, fill_lookups), lost_after_s
        self._rules: MarketRules | None = None
        self._fill_misses: Counter[str] = Counter()
        self._rates: dict[str, tuple[float | None, float]] = {}

    def __repr__(self) -> str:
        return (f"LiveBroker(exchange_id={self.exchange_id!r}, symbol={self.symbol!r}, "
                f"keys_file={str(self.keys_file)!r})")

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self._exchange.close()

    def __enter__(self) -> LiveBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the market and the account -------------------------------------------------------

    def rules(self) -> MarketRules:
        """The market's rules from the exchange's market data, loaded on first use (with
        ``adjustForTimeDifference`` ccxt syncs its clock then too). BrokerError when the
        exchange cannot be reached or does not list the symbol."""
        if self._rules is None:
            try:
                self._call(self._exchange.load_markets)
                market = self._exchange.market(self.symbol)
            except Exception as exc:
                raise BrokerError(f"market data not loaded: {self._describe(exc)}") from None
            limits, precision = market.get("limits") or {}, market.get("precision") or {}

            def number(value: Any) -> float:
                return float(value) if value else 0.0

            self._rules = MarketRules(
                step=number(precision.get("amount")),
                min_qty=number((limits.get("amount") or {}).get("min")),
                max_qty=number((limits.get("amount") or {}).get("max")),
                market_max_qty=number((limits.get("market") or {}).get("max")),
                tick=number(precision.get("price")),
                min_notional=number((limits.get("cost") or {}).get("min")))
            log.info("%s %s rules: %s", self.exchange_id, self.symbol, self._rules)
        return self._rules

    def account(self) -> Balance:
        """The account's base and quote holdings and the market's last price. BrokerError
        when the exchange does not answer."""
        balance = self._holdings()
        try:
            price = self._call(self._exchange.fetch_ticker, self.symbol).get("last")
        except Exception as exc:
            raise BrokerError(f"price not fetched: {self._describe(exc)}") from None
        return replace(balance, price=float(price) if price else None)

    def _holdings(self) -> Balance:
        self.rules()
        market = self._exchange.market(self.symbol)
        try:
            raw = self._call(self._exchange.fetch_balance)
        except Exception as exc:
            raise BrokerError(f"balance not fetched: {self._describe(exc)}") from None

        def amount(asset: str, key: str) -> float:
            return float((raw.get(asset) or {}).get(key) or 0.0)

        base, quote = market["base"], market["quote"]
        return Balance(base, quote, amount(base, "free"), amount(base, "total"),
                       amount(quote, "free"), amount(quote, "total"))

    def fit(self, order: OrderRequest, ref_price: float) -> tuple[OrderRequest | None, str]:
        """``order`` changed to what the market accepts and the account can pay, with a note
        of each change; or (None, why) when nothing acceptable remains. The quantity is
        floored to the lot step and capped by the market's maximum and the free balance (a
        sell: the base held; a buy: the quote at the limit price, or at ``ref_price`` plus
        ``MARKET_BUY_MARGIN`` for a market order); a limit price goes to the tick (a buy's
        down, a sell's up); then the minimum quantity and notional must hold."""
        if not CLIENT_ID_RULE.fullmatch(order.client_id):
            return None, f"not sent: client id {order.client_id!r} breaks the exchange's rule " \
                         f"{CLIENT_ID_RULE.pattern}"
        try:
            rules, held = self.rules(), self._holdings()
        except BrokerError as exc:
            return None, f"not sent: {exc}"
        notes: list[str] = []
        price = order.limit_price
        if price is not None:
            price = to_step(price, rules.tick, up=order.side == "sell")
            if price != order.limit_price:
                notes.append(f"limit {order.limit_price:g} → {price:g} (tick {rules.tick:g})")
        qty = to_step(order.qty, rules.step)
        if not math.isclose(qty, order.qty, rel_tol=1e-9):
            notes.append(f"qty {order.qty:g} → {qty:g} (lot step {rules.step:g})")
        if order.side == "sell":
            cap, what = held.base_free, f"free {held.base} {held.base_free:g}"
        else:
            unit = price if price is not None else ref_price * (1 + MARKET_BUY_MARGIN)
            cap, what = held.quote_free / unit, f"free {held.quote} {held.quote_free:.2f}"
        max_qty = rules.max_qty_for(order.type)
        if max_qty and max_qty < cap:
            cap, what = max_qty, f"the market's maximum {max_qty:g}"
        cap = to_step(cap, rules.step)
        if qty > cap:
            notes.append(f"qty {qty:g} → {cap:g} ({what})")
            qty = cap
        smallest = max(rules.min_qty, rules.step)
        if qty <= 0 or qty < smallest:
            return None, "; ".join([*notes, f"not sent: qty {qty:g} is below the market's "
                                              f"minimum {smallest:g}"])
        notional = qty * (price if price is not None else ref_price)
        if notional < rules.min_notional:
            return None, "; ".join([*notes, f"not sent: notional {notional:.2f} is below the "
                                              f"market's minimum {rules.min_notional:g}"])
        if qty != order.qty or price != order.limit_price:
            order = replace(order, qty=qty, limit_price=price)
        return order, "; ".join(notes)

    # -- orders ---------------------------------------------------------------------------

    remote = True      # orders leave the process: the engine records each before submit()

    def submit(self, order: OrderRequest, ref_price: float | None = None,
               ts: int | None = None) -> OrderResult:
        """Place ``order`` unless the exchange already knows its client id; never resends
        (a request the exchange refused for its timestamp, -1021, is sent again once after a
        clock sync: it was not placed). Refused without sending ("rejected") when the client
        id, the lot step, the quantity limits, the tick or — with ``ref_price``, the decided
        bar's close, for a market order — the minimum notional would be refused."""
        if order.symbol != self.symbol:
            raise ValueError(f"order for {order.symbol!r} sent to the {self.symbol!r} broker")
        cid = order.client_id
        if not CLIENT_ID_RULE.fullmatch(cid):
            return OrderResult(cid, "rejected", error=f"not sent: client id {cid!r} breaks the "
                                                       f"exchange's rule {CLIENT_ID_RULE.pattern}")
        try:
            problem = _breaks(order, self.rules(), ref_price)
        except BrokerError as exc:
            return OrderResult(cid, "unknown", error=f"not sent: {exc}")
        if problem:
            return OrderResult(cid, "rejected", error=f"not sent: {problem}")
        existing, why = self._lookup(cid)
        if existing is not None:
            log.warning("submit %s: the exchange already has this client id; not sent again", cid)
            return self._result(cid, existing, duplicate=True,
                                error="client id already known to the exchange; not sent again")
        if why is not None:
            return OrderResult(cid, "unknown", error=f"not sent: could not check the client id "
                                                      f"first ({why})")
        price = order.limit_price if order.type == "limit" else None
        log.info("submit %s: %s %s %g %s%s", cid, order.type, order.side, order.qty,
                 self.symbol, f" @ {price:g}" if price is not None else "")
        try:
            raw = self._call(self._exchange.create_order, self.symbol, order.type, order.side,
                             order.qty, price, params={"clientOrderId": cid})
        except ccxt.InvalidNonce as exc:            # refused for its timestamp: not placed
            return OrderResult(cid, "rejected", error=f"clock skew even after a time sync: "
                                                       f"{self._describe(exc)}")
        except ccxt.ExchangeError as exc:           # an answer: the exchange refused it
            return self._refused(cid, exc)
        except Exception as exc:                    # no (usable) answer: it may be placed
            return self._no_answer(cid, exc)
        if raw.get("status") is None:               # an ACK answer: ask for the order itself
            found, _ = self._lookup(cid)
            raw = found or raw
        return self._result(cid, raw)

    def order_status(self, client_id: str) -> OrderResult:
        """What the exchange knows about ``client_id`` now (``"unknown"`` if nothing:
        ``missing`` when the exchange said it has no such order)."""
        found, why = self._lookup(client_id)
        if found is not None:
            return self._result(client_id, found)
        return OrderResult(client_id, "unknown", missing=why is None,
                           error=why or "the exchange has no order with this client id")

    def cancel(self, client_id: str) -> OrderResult:
        """Cancel ``client_id``; returns the order's state afterwards, which is not
        ``"canceled"`` if it filled first (then ``error`` says why the cancel failed)."""
        log.info("cancel %s", client_id)
        try:
            raw = self._call(self._exchange.cancel_order, None, self.symbol,
                             params={"clientOrderId": client_id})
        except Exception as exc:        # already final, unknown, or no answer: ask the exchange
            state = self.order_status(client_id)
            state.error = f"cancel failed: {self._describe(exc)}" + \
                (f"; {state.error}" if state.error else "")
            return state
        return self._result(client_id, raw)

    def on_bar(self, bar: Bar) -> list[Fill]:
        """The exchange's fills come with order look-ups, not from bars."""
        return []

    def restore(self, open_orders: list[dict[str, Any]],
                ref_price: float | None) -> dict[str, OrderResult]:
        """After a restart: the exchange's state of every order the state left unfinished."""
        return self.poll(open_orders)

    def poll(self, open_orders: list[dict[str, Any]]) -> dict[str, OrderResult]:
        """The exchange's state of each order (rows of ``TradingState.open_orders``). One it
        does not know ``lost_after_s`` after its row was written is "rejected": it never
        reached the exchange and no longer can."""
        now = time.time()
        results: dict[str, OrderResult] = {}
        for row in open_orders:
            cid = row["client_id"]
            res = self.order_status(cid)
            age = now - (row.get("created_at") or now)
            if res.missing and age >= self.lost_after_s:
                res = OrderResult(cid, "rejected", error=f"never reached the exchange: not "
                                                          f"found {age:.0f} s after it was sent")
            log.info("poll %s: %s (%d fill(s))%s", cid, res.status, len(res.fills),
                     f": {res.error}" if res.error else "")
            results[cid] = res
        return results

    # -- internals ------------------------------------------------------------------------

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)``; when the exchange refuses the request's timestamp
        (-1021, outside the recvWindow: the request was not executed), ccxt's clock offset is
        measured again (``load_time_difference``) and the call made once more."""
        try:
            return method(*args, **kwargs)
        except ccxt.InvalidNonce as exc:
            log.warning("%s: %s; syncing the clock with the exchange and retrying once",
                        getattr(method, "__name__", "request"), self._describe(exc))
            self._exchange.load_time_difference()
            return method(*args, **kwargs)

    def _describe(self, exc: BaseException) -> str:
        return self._redact(f"{type(exc).__name__}: {exc}")

    def _lookup(self, client_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(order, None) if found; (None, None) if the exchange has no such order;
        (None, why) if it could not be asked."""
        try:
            return self._call(self._exchange.fetch_order, None, self.symbol,
                              params={"clientOrderId": client_id}), None
        except ccxt.OrderNotFound:
            return None, None
        except Exception as exc:
            return None, f"order lookup failed: {self._describe(exc)}"

    def _refused(self, cid: str, exc: Exception) -> OrderResult:
        error = self._describe(exc)
        if any(marker in str(exc) for marker in _DUPLICATE_MARKERS):
            log.warning("submit %s: refused as a duplicate client id; asking the exchange", cid)
            found, why = self._lookup(cid)
            if found is not None:
                return self._result(cid, found, duplicate=True, error=error)
            return OrderResult(cid, "unknown", error=f"{error}; {why or 'order not found'}",
                               duplicate=True)
        # "rejected" must mean "not on the exchange": an error code ccxt does not know could
        # come with a placed order, so one look settles it
        found, why = self._lookup(cid)
        if found is not None:
            log.error("submit %s: refused (%s) yet the exchange has the order", cid, error)
            return self._result(cid, found, error=error)
        if why is not None:
            return OrderResult(cid, "unknown", error=f"{error}; {why}")
        log.warning("submit %s rejected: %s", cid, error)
        return OrderResult(cid, "rejected", error=error)

    def _no_answer(self, cid: str, exc: Exception) -> OrderResult:
        error = f"no acknowledgement ({self._describe(exc)})"
        log.warning("submit %s: %s; asking the exchange by client id, not resending", cid, error)
        why: str | None = None
        for attempt in range(self.ack_lookups):
            if attempt:
                time.sleep(self.ack_lookup_delay_s)
            found, why = self._lookup(cid)
            if found is not None:
                return self._result(cid, found, error=error)
        return OrderResult(cid, "unknown", missing=why is None,
                           error=f"{error}; {why or 'the exchange has no order with this id'}")

    def _result(self, cid: str, order: dict[str, Any], *, duplicate: bool = False,
                error: str | None = None) -> OrderResult:
        """An order as the exchange reports it. Done at the exchange but with fills that do
        not add up to its filled amount: "fills_pending" and no fills — nothing of it is
        booked until they do (or until it is booked from its own totals)."""
        filled = float(order.get("filled") or 0.0)
        ccxt_status = order.get("status")
        status = {"closed": "filled", "canceled": "canceled", "expired": "canceled",
                  "rejected": "rejected"}.get(ccxt_status or "")
        if ccxt_status == "open":
            status = "partially_filled" if filled > 0 else "open"
        problems = [error] if error else []
        if status is None:
            status = "unknown"
            problems.append(f"unrecognized order status {ccxt_status!r}")
        fills, problem = self._fills(cid, order, filled, done=status in FINAL_STATUSES)
        if problem:
            problems.append(problem)
            if status in FINAL_STATUSES:
                status = "fills_pending"
        oid = order.get("id")
        return OrderResult(cid, status, None if oid is None else str(oid), fills,
                           "; ".join(problems) or None, duplicate)

    def _fills(self, cid: str, order: dict[str, Any], filled: float,
               done: bool) -> tuple[list[Fill], str | None]:
        """All of the order's fills, or ([], why) while they do not add up to ``filled``:
        from the order answer when it lists them all (Binance FULL response), else from the
        account's trades for this order id. An order ``done`` at the exchange whose trades
        stayed out of sight ``fill_lookups`` times is booked as one fill from its own
        filled/average/cost figures, marked as such in the fill's note."""
        if filled <= 0:
            return [], None
        trades = order.get("trades") or []
        why = None
        if not _covers(trades, filled):
            try:
                trades = self._call(self._exchange.fetch_order_trades, order["id"], self.symbol)
            except Exception as exc:
                trades, why = [], f"fills not fetched: {self._describe(exc)}"
        if _covers(trades, filled):
            self._fill_misses.pop(cid, None)
            side = order.get("side") or ""
            ts = order.get("lastTradeTimestamp") or order.get("timestamp") or _now_ms()
            trades = sorted((t for t in trades if t.get("amount") and t.get("price")),
                            key=lambda t: (t.get("timestamp") or ts, _id_key(t.get("id"))))
            return [self._fill(cid, side, t, ts) for t in trades], None
        got = sum(float(t.get("amount") or 0.0) for t in trades if t.get("price"))
        why = why or f"fills cover {got:g} of {filled:g} filled"
        if done:
            self._fill_misses[cid] += 1
        if done and self._fill_misses[cid] >= self.fill_lookups:
            fill = self._from_totals(cid, order, filled, why)
            if fill is not None:
                self._fill_misses.pop(cid, None)
                return [fill], None
        return [], f"{why}; not booked until they do"

    def _fill(self, cid: str, side: str, trade: dict[str, Any], ts: int) -> Fill:
        """One trade as the book takes it: a fee in the base asset changes the quantity (a
        buy holds that much less, a sell gives that much more) and is valued at the trade's
        price; a fee in a third asset is valued at that asset's price in the quote, or — with
        no price — left out of the fee and named in the note."""
        market = self._exchange.market(self.symbol)
        base, quote = market["base"], market["quote"]
        amount, price = float(trade["amount"]), float(trade["price"])
        qty, fee, asset, asset_qty, asset_value, notes = amount, 0.0, "", 0.0, 0.0, []
        fees = trade.get("fees") or ([trade["fee"]] if trade.get("fee") else [])
        for item in fees:
            cost = float(item.get("cost") or 0.0)
            currency = item.get("currency")
            if cost == 0:
                continue
            if currency is None or currency == quote:
                fee += cost
            elif currency == base:
                qty += -cost if side == "buy" else cost
                fee += cost * price
            else:
                rate = self._rate(currency)
                asset, asset_qty = currency, asset_qty + cost
                if rate is None:
                    notes.append(f"fee {cost:g} {currency} not priced: P&L excludes it")
                    log.warning("fee of %g %s on %s not priced in %s: P&L excludes it", cost,
                                currency, cid, quote)
                else:
                    asset_value += cost * rate
                    fee += cost * rate
                    notes.append(f"fee {cost:g} {currency} at {rate:g} {quote}")
        return Fill(cid, self.symbol, side, clean_qty(qty), price, fee,
                    int(trade.get("timestamp") or ts), trade.get("takerOrMaker") or "taker",
                    asset, asset_qty, asset_value, "; ".join(notes))

    def _from_totals(self, cid: str, order: dict[str, Any], filled: float,
                     why: str) -> Fill | None:
        cost = float(order.get("cost") or 0.0)
        price = float(order.get("average") or 0.0) or (cost / filled if cost else 0.0) \
            or float(order.get("price") or 0.0)
        if price <= 0:
            return None
        market = self._exchange.market(self.symbol)
        rate = float(market.get("taker") or 0.0)
        ts = order.get("lastTradeTimestamp") or order.get("timestamp") or _now_ms()
        log.error("order %s booked from its own totals (%g @ %g): %s", cid, filled, price, why)
        return Fill(cid, self.symbol, order.get("side") or "", filled, price,
                    filled * price * rate, int(ts), "taker",
                    note=f"booked from the order's filled/average/cost: its trades were not "
                         f"available ({why}); fee estimated at the taker rate {rate:g}")

    def _rate(self, asset: str) -> float | None:
        """The quote currency's price of one ``asset`` from the exchange's ``asset/quote``
        ticker (kept a minute), or None when it has no such market or does not answer."""
        cached = self._rates.get(asset)
        if cached is not None and time.monotonic() - cached[1] < 60:
            return cached[0]
        symbol = f"{asset}/{self._exchange.market(self.symbol)['quote']}"
        rate: float | None = None
        if symbol in (self._exchange.markets or {}):
            try:
                last = self._call(self._exchange.fetch_ticker, symbol).get("last")
                rate = float(last) if last else None
            except Exception as exc:
                log.warning("no %s price: %s", symbol, self._describe(exc))
        self._rates[asset] = (rate, time.monotonic())
        return rate


# A market buy is checked against the free quote at the decided price plus this margin (the
# price moves between the bar's close and the execution).
MARKET_BUY_MARGIN = 0.005


def _breaks(order: OrderRequest, rules: MarketRules, ref_price: float | None) -> str | None:
    """Which of the market's rules ``order`` breaks, or None."""
    if to_step(order.qty, rules.step) != order.qty:
        return f"qty {order.qty:g} is not a multiple of the lot step {rules.step:g}"
    if order.qty < rules.min_qty:
        return f"qty {order.qty:g} is below the market's minimum {rules.min_qty:g}"
    max_qty = rules.max_qty_for(order.type)
    if max_qty and order.qty > max_qty:
        return f"qty {order.qty:g} is above the market's maximum {max_qty:g}"
    price = order.limit_price if order.type == "limit" else ref_price
    if order.limit_price is not None \
            and to_step(order.limit_price, rules.tick) != order.limit_price:
        return f"limit price {order.limit_price:g} is not a multiple of the tick {rules.tick:g}"
    if price and order.qty * price < rules.min_notional:
        return f"notional {order.qty * price:.2f} is below the market's minimum " \
               f"{rules.min_notional:g}"
    return None


def _id_key(trade_id: Any) -> tuple[int, str]:
    """Trade ids in the exchange's order: numerically when they are numbers."""
    text = str(trade_id or "")
    return (int(text), "") if text.isdigit() else (0, text)


def _now_ms() -> int:
    return int(time.time() * 1e3)


def _covers(trades: list[dict[str, Any]], filled: float) -> bool:
    total = sum(float(t.get("amount") or 0.0) for t in trades if t.get("price"))
    return bool(trades) and math.isclose(total, filled, rel_tol=1e-9, abs_tol=1e-12)
