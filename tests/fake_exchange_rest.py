"""A local stand-in for Binance spot's REST API that behaves like the venue, for sync ccxt.

ccxt's binance sends spot calls to ``urls['api']['public'|'private'] + '/<path>'``;
``ccxt_options()`` points both at this server and limits ccxt's market loading to the spot
``exchangeInfo`` (no margin, futures or currency endpoints), so ccxt reads the market rules from
here. Served: ``GET /api/v3/exchangeInfo``, ``GET /api/v3/time``, ``GET /api/v3/ticker/24hr``,
signed ``POST/GET/DELETE /api/v3/order``, ``GET /api/v3/openOrders``, ``GET /api/v3/myTrades``
and ``GET /api/v3/account``; anything else answers 404 and is listed in ``unexpected``.

Like the venue:

* an account with balances: a buy needs the quote, a sell the base (free, not locked by a
  resting limit order), else -2010 "insufficient balance";
* the fee is taken in the asset received (a buy's in the base: 0.1 BTC bought holds 0.0999), or
  in BNB (``fee_asset="BNB"``: 25 % off, priced at the BNB/USDT ticker), or in the quote
  (``fee_asset="quote"``);
* the market's rules (LOT_SIZE, MARKET_LOT_SIZE, PRICE_FILTER, NOTIONAL) and Binance's client
  order id rule ``^[a-zA-Z0-9-_]{1,36}$`` are enforced with Binance's codes and messages;
* signed requests carry a timestamp checked against the server clock (``clock_offset_ms``) and
  ``recvWindow``: -1021 outside it;
* trade look-ups can lag (``lag_trades``: answer no trades) or fail (``fail_trades``: HTTP 500);
* ``newOrderRespType`` ACK / RESULT / FULL is honoured (FULL lists the fills).

Errors use Binance's codes and messages, which is how ccxt picks its exception classes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections import Counter
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fake_exchange import MARKET_ID, SYMBOL

DUPLICATE = (-2010, "Duplicate order sent.")
INSUFFICIENT = (-2010, "Account has insufficient balance for requested action.")
NO_SUCH_ORDER = (-2013, "Order does not exist.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
BAD_CLIENT_ID = (-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range "
                        "is '^[a-zA-Z0-9-_]{1,36}$'.")
RECV_WINDOW = (-1021, "Timestamp for this request is outside of the recvWindow.")
OPEN_STATES = ("NEW", "PARTIALLY_FILLED")
CLIENT_ID_RULE = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
BNB_DISCOUNT = 0.75          # Binance: paying fees in BNB costs 25 % less

# The rules of each market, as exchangeInfo gives them (strings, like Binance).
RULES: dict[str, dict[str, str]] = {
    MARKET_ID: {"tickSize": "0.01", "minPrice": "0.01", "maxPrice": "1000000.00",
                "stepSize": "0.00001", "minQty": "0.00001", "maxQty": "9000",
                "marketMaxQty": "100", "minNotional": "5"},
    "BNBUSDT": {"tickSize": "0.01", "minPrice": "0.01", "maxPrice": "100000.00",
                "stepSize": "0.001", "minQty": "0.001", "maxQty": "90000",
                "marketMaxQty": "9000", "minNotional": "5"},
}
ASSETS = {MARKET_ID: ("BTC", "USDT"), "BNBUSDT": ("BNB", "USDT")}


def _symbol_info(market_id: str) -> dict[str, Any]:
    r = RULES[market_id]
    base, quote = ASSETS[market_id]
    return {
        "symbol": market_id, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": True,
        "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": r["minPrice"], "maxPrice": r["maxPrice"],
             "tickSize": r["tickSize"]},
            {"filterType": "LOT_SIZE", "minQty": r["minQty"], "maxQty": r["maxQty"],
             "stepSize": r["stepSize"]},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0", "maxQty": r["marketMaxQty"],
             "stepSize": "0"},
            {"filterType": "NOTIONAL", "minNotional": r["minNotional"],
             "applyMinToMarket": True, "maxNotional": "9000000", "applyMaxToMarket": False,
             "avgPriceMins": 5},
        ],
    }


def _num(value: float) -> str:
    return f"{value:.8f}"


def _round8(value: float) -> float:
    return round(value, 8)


def _multiple(value: str, step: str) -> bool:
    d_step = Decimal(step)
    return d_step == 0 or Decimal(value) % d_step == 0


class _Server(ThreadingMixIn, HTTPServer):
    # non-daemon, tracked handler threads: server_close() joins every one of them
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True


class FakeBinanceRest:
    """HTTP server on 127.0.0.1 (free port) with one thread per request; thread-safe controls.

    ``balances``: the account's assets at start (free; default plenty of everything).
    ``fee_asset``: ``"received"`` (Binance's default: the asset the trade brings in),
    ``"BNB"`` (while the account holds enough BNB) or ``"quote"``. ``duplicate_scope`` is
    ``"any"`` (a client id is refused if any earlier order used it) or ``"open"`` (refused only
    while that order is open, which is what Binance documents). ``bnb_price``: what a fee in
    BNB is worth (None: fees are never charged in BNB); ``bnb_market``: whether BNB/USDT is
    listed (exchangeInfo, ticker) to price it with.
    """

    def __init__(self, *, api_key: str | None = None, secret: str | None = None,
                 price: float = 50_000.0, fee_rate: float = 0.001,
                 duplicate_scope: str = "any", balances: dict[str, float] | None = None,
                 fee_asset: str = "received", bnb_price: float | None = 600.0,
                 bnb_market: bool = True) -> None:
        assert duplicate_scope in ("any", "open")
        assert fee_asset in ("received", "BNB", "quote")
        self.api_key, self.secret = api_key, secret
        self.price, self.fee_rate, self.duplicate_scope = price, fee_rate, duplicate_scope
        self.fee_asset, self.bnb_price, self.bnb_market = fee_asset, bnb_price, bnb_market
        start = {"USDT": 1_000_000.0, "BTC": 100.0, "BNB": 0.0} if balances is None \
            else balances
        self.free: dict[str, float] = {a: float(v) for a, v in start.items()}
        self.locked: dict[str, float] = {a: 0.0 for a in self.free}
        self.clock_offset_ms = 0                         # server clock = local clock + this
        self.requests: list[tuple[str, str]] = []        # (method, path) of every request
        self.unexpected: list[tuple[str, str]] = []      # requests this fake does not serve
        self.recv_windows: list[int | None] = []         # recvWindow of every signed request
        self.clock_refusals = 0                          # signed requests refused with -1021
        self.create_requests: Counter[str] = Counter()   # POST /order received, per client id
        self.created: Counter[str] = Counter()           # orders actually created, per client id
        self.orders: dict[int, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self._ids = itertools.count(1001)
        self._trade_ids = itertools.count(5001)
        self._lock = threading.RLock()
        self._release = threading.Event()                # set on stop: ends pending delays
        self._reject_next: tuple[int, str] | None = None
        self._delay_next: tuple[float, bool] | None = None
        self._hide_lookups = 0
        self._lag_trades = 0
        self._fail_trades = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def ccxt_options(self) -> dict[str, Any]:
        """Exchange options pointing ccxt's binance spot REST at this server; markets are
        loaded from its exchangeInfo (spot only: no margin, futures or currency look-ups)."""
        api = f"{self.base_url}/api/v3"
        return {"urls": {"api": {"public": api, "private": api}},
                "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                            "fetchMargins": False}}

    def start(self) -> FakeBinanceRest:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fake-binance-rest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut pending delays short and join every thread."""
        self._release.set()
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join(10)
            self._server.server_close()     # joins the request threads
        self._server = self._thread = None

    def __enter__(self) -> FakeBinanceRest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls --------------------------------------------------------------------

    def reject_next_order(self, error: tuple[int, str] = INSUFFICIENT) -> None:
        """The next new order is refused with ``error`` (Binance code, message)."""
        with self._lock:
            self._reject_next = error

    def delay_next_order(self, seconds: float, *, record: bool = True) -> None:
        """Hold the answer to the next new order for ``seconds``; the order is still placed
        (sent, never acknowledged) unless ``record`` is False (lost on the way)."""
        with self._lock:
            self._delay_next = (seconds, record)

    def hide_next_lookups(self, n: int) -> None:
        """The next ``n`` order queries answer "Order does not exist." (query-side lag)."""
        with self._lock:
            self._hide_lookups = n

    def lag_trades(self, n: int) -> None:
        """The next ``n`` trade look-ups (myTrades) answer an empty list: the trades are not
        visible yet although the order says it filled."""
        with self._lock:
            self._lag_trades = n

    def fail_trades(self, n: int) -> None:
        """The next ``n`` trade look-ups answer HTTP 500."""
        with self._lock:
            self._fail_trades = n

    def set_balance(self, asset: str, free: float) -> None:
        """The account's free ``asset`` (a deposit or withdrawal the bot did not make)."""
        with self._lock:
            self.free[asset] = free
            self.locked.setdefault(asset, 0.0)

    def balance(self, asset: str) -> float:
        """Free + locked ``asset``."""
        with self._lock:
            return _round8(self.free.get(asset, 0.0) + self.locked.get(asset, 0.0))

    def set_price(self, price: float) -> None:
        """Move the market: resting limit orders that it crosses fill (as maker, at their limit)."""
        with self._lock:
            self.price = price
            for order in list(self.orders.values()):
                if order["status"] in OPEN_STATES and self._crosses(order, price):
                    self._fill(order, float(order["price"]), maker=True)

    def fill_limit(self, client_id: str, qty: float | None = None) -> None:
        """Fill (all or ``qty`` of) the open limit order ``client_id`` at its limit price."""
        with self._lock:
            order = self._find(client_id=client_id)
            assert order is not None and order["status"] in OPEN_STATES, f"no open {client_id}"
            self._fill(order, float(order["price"]), maker=True, qty=qty)

    def fills_for(self, client_id: str) -> list[dict[str, Any]]:
        with self._lock:
            ids = {o["orderId"] for o in self.orders.values() if o["clientOrderId"] == client_id}
            return [t for t in self.trades if t["orderId"] in ids]

    def server_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_offset_ms

    # -- exchange logic (under the lock) --------------------------------------------------

    @staticmethod
    def _crosses(order: dict[str, Any], price: float) -> bool:
        limit = float(order["price"])
        return price <= limit if order["side"] == "BUY" else price >= limit

    def _find(self, order_id: str | None = None,
              client_id: str | None = None) -> dict[str, Any] | None:
        if order_id is not None:
            return self.orders.get(int(order_id)) if order_id.isdigit() else None
        matches = [o for o in self.orders.values() if o["clientOrderId"] == client_id]
        return matches[-1] if matches else None

    def _move(self, asset: str, free: float = 0.0, locked: float = 0.0) -> None:
        self.free[asset] = _round8(self.free.get(asset, 0.0) + free)
        self.locked[asset] = _round8(self.locked.get(asset, 0.0) + locked)

    def _fee(self, side: str, qty: float, price: float) -> tuple[float, str]:
        """(commission, commissionAsset) of a trade, taken from the account here."""
        base, quote = ASSETS[MARKET_ID]
        if self.fee_asset == "BNB" and self.bnb_price:
            cost = _round8(qty * price * self.fee_rate * BNB_DISCOUNT / self.bnb_price)
            if self.free.get("BNB", 0.0) >= cost:
                self._move("BNB", -cost)
                return cost, "BNB"
        if self.fee_asset == "received" and side == "BUY":
            cost = _round8(qty * self.fee_rate)
            self._move(base, -cost)
            return cost, base
        cost = _round8(qty * price * self.fee_rate)
        self._move(quote, -cost)
        return cost, quote

    def _fill(self, order: dict[str, Any], price: float, *, maker: bool,
              qty: float | None = None) -> dict[str, Any]:
        base, quote = ASSETS[MARKET_ID]
        left = float(order["origQty"]) - float(order["executedQty"])
        qty = left if qty is None else min(qty, left)
        value = qty * price
        if order["side"] == "BUY":
            if order["type"] == "LIMIT":            # paid out of what the order locked
                self._move(quote, free=qty * float(order["price"]) - value,
                           locked=-qty * float(order["price"]))
            else:
                self._move(quote, -value)
            self._move(base, qty)
        else:
            if order["type"] == "LIMIT":
                self._move(base, locked=-qty)
            else:
                self._move(base, -qty)
            self._move(quote, value)
        commission, commission_asset = self._fee(order["side"], qty, price)
        now = self.server_ms()
        trade = {
            "symbol": MARKET_ID, "id": next(self._trade_ids), "orderId": order["orderId"],
            "orderListId": -1, "price": _num(price), "qty": _num(qty),
            "quoteQty": _num(value), "commission": _num(commission),
            "commissionAsset": commission_asset, "time": now, "isBuyer": order["side"] == "BUY",
            "isMaker": maker, "isBestMatch": True,
        }
        self.trades.append(trade)
        order["executedQty"] = _num(float(order["executedQty"]) + qty)
        order["cummulativeQuoteQty"] = _num(float(order["cummulativeQuoteQty"]) + value)
        order["status"] = "FILLED" if qty >= left - 1e-12 else "PARTIALLY_FILLED"
        order["updateTime"] = now
        return trade

    def _filter_failure(self, p: dict[str, str], kind: str) -> str | None:
        """Which of the market's filters refuses the order, as Binance names it."""
        r = RULES[MARKET_ID]
        qty_text = p.get("quantity", "0")
        qty = float(qty_text)
        if "." in qty_text and len(qty_text.split(".")[1].rstrip("0")) > 8:
            return "Precision"
        if kind == "MARKET" and qty > float(r["marketMaxQty"]):
            return "MARKET_LOT_SIZE"
        if qty < float(r["minQty"]) or qty > float(r["maxQty"]) \
                or not _multiple(qty_text, r["stepSize"]):
            return "LOT_SIZE"
        price = self.price
        if kind == "LIMIT":
            price_text = p.get("price", "0")
            price = float(price_text)
            if price < float(r["minPrice"]) or not _multiple(price_text, r["tickSize"]):
                return "PRICE_FILTER"
        if qty * price < float(r["minNotional"]):
            return "NOTIONAL"
        return None

    def _new_order(self, p: dict[str, str]) -> tuple[int, Any, float]:
        """(HTTP status, body, seconds to hold the answer) for POST /api/v3/order."""
        cid = p.get("newClientOrderId", "")
        base, quote = ASSETS[MARKET_ID]
        with self._lock:
            self.create_requests[cid] += 1
            delay, record = self._delay_next or (0.0, True)
            self._delay_next = None
            if not record:
                return 200, {}, delay
            if not CLIENT_ID_RULE.fullmatch(cid):
                return 400, _error(*BAD_CLIENT_ID), delay
            previous = self._find(client_id=cid)
            if previous is not None and (self.duplicate_scope == "any"
                                         or previous["status"] in OPEN_STATES):
                return 400, _error(*DUPLICATE), delay
            if self._reject_next is not None:
                error, self._reject_next = self._reject_next, None
                return 400, _error(*error), delay
            kind = p.get("type", "")
            if p.get("symbol") != MARKET_ID or kind not in ("MARKET", "LIMIT") \
                    or float(p.get("quantity", 0)) <= 0 or (kind == "LIMIT" and "price" not in p):
                return 400, _error(-1013, "Invalid message."), delay
            failure = self._filter_failure(p, kind)
            if failure == "Precision":
                return 400, _error(-1111, "Precision is over the maximum defined for this "
                                          "asset."), delay
            if failure is not None:
                return 400, _error(-1013, f"Filter failure: {failure}"), delay
            qty, side = float(p["quantity"]), p["side"]
            limit = float(p.get("price", 0))
            need_asset, need = (quote, qty * (limit if kind == "LIMIT" else self.price)) \
                if side == "BUY" else (base, qty)
            if self.free.get(need_asset, 0.0) < need - 1e-9:
                return 400, _error(*INSUFFICIENT), delay
            now = self.server_ms()
            order = {
                "symbol": MARKET_ID, "orderId": next(self._ids), "orderListId": -1,
                "clientOrderId": cid, "price": _num(limit),
                "origQty": _num(qty), "executedQty": _num(0),
                "cummulativeQuoteQty": _num(0), "status": "NEW",
                "timeInForce": p.get("timeInForce", "GTC"), "type": kind, "side": side,
                "stopPrice": _num(0), "icebergQty": _num(0), "time": now, "updateTime": now,
                "isWorking": True, "workingTime": now, "origQuoteOrderQty": _num(0),
                "selfTradePreventionMode": "NONE",
            }
            self.orders[order["orderId"]] = order
            self.created[cid] += 1
            if kind == "LIMIT":                          # a resting order locks its funds
                self._move(need_asset, -need, need)
            fills = []
            if kind == "MARKET" or self._crosses(order, self.price):
                fills.append(self._fill(order, self.price, maker=False))
            answer = p.get("newOrderRespType", "FULL")
            if answer == "ACK":
                return 200, {"symbol": MARKET_ID, "orderId": order["orderId"],
                             "orderListId": -1, "clientOrderId": cid,
                             "transactTime": now}, delay
            body = {k: order[k] for k in ("symbol", "orderId", "orderListId", "clientOrderId",
                                          "price", "origQty", "executedQty",
                                          "cummulativeQuoteQty", "status", "timeInForce",
                                          "type", "side", "workingTime",
                                          "selfTradePreventionMode")}
            body["transactTime"] = now
            if answer == "FULL":
                body["fills"] = [{"price": t["price"], "qty": t["qty"],
                                  "commission": t["commission"],
                                  "commissionAsset": t["commissionAsset"], "tradeId": t["id"]}
                                 for t in fills]
            return 200, body, delay

    def _query_order(self, p: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            if self._hide_lookups > 0:
                self._hide_lookups -= 1
                return 400, _error(*NO_SUCH_ORDER)
            order = self._find(p.get("orderId"), p.get("origClientOrderId"))
            return (200, dict(order)) if order else (400, _error(*NO_SUCH_ORDER))

    def _cancel_order(self, p: dict[str, str]) -> tuple[int, Any]:
        base, quote = ASSETS[MARKET_ID]
        with self._lock:
            order = self._find(p.get("orderId"), p.get("origClientOrderId"))
            if order is None or order["status"] not in OPEN_STATES:
                return 400, _error(*UNKNOWN_ORDER)
            left = float(order["origQty"]) - float(order["executedQty"])
            if order["side"] == "BUY":
                held = left * float(order["price"])
                self._move(quote, held, -held)
            else:
                self._move(base, left, -left)
            order["status"], order["updateTime"] = "CANCELED", self.server_ms()
            body = {k: order[k] for k in ("symbol", "orderId", "orderListId", "price",
                                          "origQty", "executedQty", "cummulativeQuoteQty",
                                          "status", "timeInForce", "type", "side")}
            body.update(origClientOrderId=order["clientOrderId"],
                        clientOrderId=f"cancel{order['orderId']}", transactTime=self.server_ms())
            return 200, body

    def _my_trades(self, p: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            if self._fail_trades > 0:
                self._fail_trades -= 1
                return 500, b"<html><body>500 Internal Server Error</body></html>"
            if self._lag_trades > 0:
                self._lag_trades -= 1
                return 200, []
            order_id = p.get("orderId")
            return 200, [dict(t) for t in self.trades
                         if order_id is None or str(t["orderId"]) == order_id]

    def _account(self) -> dict[str, Any]:
        with self._lock:
            assets = sorted(set(self.free) | set(self.locked))
            return {"makerCommission": 10, "takerCommission": 10, "canTrade": True,
                    "canWithdraw": True, "canDeposit": True, "updateTime": self.server_ms(),
                    "accountType": "SPOT", "permissions": ["SPOT"],
                    "balances": [{"asset": a, "free": _num(self.free.get(a, 0.0)),
                                  "locked": _num(self.locked.get(a, 0.0))} for a in assets]}

    def _ticker(self, p: dict[str, str]) -> tuple[int, Any]:
        market_id = p.get("symbol")
        with self._lock:
            price = {MARKET_ID: self.price,
                     "BNBUSDT": self.bnb_price if self.bnb_market else None}.get(market_id or "")
        if price is None:
            return 400, _error(-1121, "Invalid symbol.")
        now = self.server_ms()
        return 200, {"symbol": market_id, "lastPrice": _num(price), "bidPrice": _num(price),
                     "askPrice": _num(price), "openPrice": _num(price),
                     "highPrice": _num(price), "lowPrice": _num(price), "volume": "1000",
                     "quoteVolume": _num(1000 * price), "openTime": now - 86_400_000,
                     "closeTime": now, "count": 1}

    def _exchange_info(self) -> dict[str, Any]:
        ids = [MARKET_ID] + (["BNBUSDT"] if self.bnb_price and self.bnb_market else [])
        return {"timezone": "UTC", "serverTime": self.server_ms(), "rateLimits": [],
                "exchangeFilters": [], "symbols": [_symbol_info(i) for i in ids]}

    def _timestamp_ok(self, params: dict[str, str]) -> bool:
        """Binance's rule: timestamp < serverTime + 1000 and serverTime - timestamp ≤
        recvWindow (default 5000)."""
        window = int(params["recvWindow"]) if "recvWindow" in params else None
        with self._lock:
            self.recv_windows.append(window)
        try:
            ts = int(params.get("timestamp", ""))
        except ValueError:
            return False
        server = self.server_ms()
        return ts < server + 1000 and server - ts <= (window or 5000)

    def handle(self, method: str, path: str, params: dict[str, str],
               signed_ok: bool) -> tuple[int, Any, float]:
        with self._lock:
            self.requests.append((method, path))
        route = (method, path)
        if route == ("GET", "/api/v3/time"):
            return 200, {"serverTime": self.server_ms()}, 0.0
        if route == ("GET", "/api/v3/exchangeInfo"):
            return 200, self._exchange_info(), 0.0
        if route == ("GET", "/api/v3/ticker/24hr"):
            return (*self._ticker(params), 0.0)
        if route not in (("POST", "/api/v3/order"), ("GET", "/api/v3/order"),
                         ("DELETE", "/api/v3/order"), ("GET", "/api/v3/openOrders"),
                         ("GET", "/api/v3/myTrades"), ("GET", "/api/v3/account")):
            with self._lock:
                self.unexpected.append(route)
            return 404, _error(-1, f"fake: {method} {path} is not served"), 0.0
        if not signed_ok:
            return 401, _error(-2015, "Invalid API-key, IP, or permissions for action."), 0.0
        if not self._timestamp_ok(params):
            with self._lock:
                self.clock_refusals += 1
            return 400, _error(*RECV_WINDOW), 0.0
        if method == "POST":
            return self._new_order(params)
        if method == "DELETE":
            return (*self._cancel_order(params), 0.0)
        if path == "/api/v3/order":
            return (*self._query_order(params), 0.0)
        if path == "/api/v3/myTrades":
            return (*self._my_trades(params), 0.0)
        if path == "/api/v3/account":
            return 200, self._account(), 0.0
        with self._lock:
            return 200, [dict(o) for o in self.orders.values() if o["status"] in OPEN_STATES], 0.0

    def signature_ok(self, api_key: str | None, payload: str) -> bool:
        """API key header present (and right, if known); timestamp and signature sent; the
        HMAC-SHA256 of the payload checked if the secret is known."""
        signed, sep, signature = payload.rpartition("&signature=")
        if not api_key or not sep or "timestamp=" not in signed:
            return False
        if self.api_key is not None and api_key != self.api_key:
            return False
        if self.secret is None:
            return True
        want = hmac.new(self.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, signature)


def _error(code: int, msg: str) -> dict[str, Any]:
    return {"code": code, "msg": msg}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeBinanceRest
    timeout = 5     # seconds a connection may stay silent

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        payload = body if self.command == "POST" else url.query
        params = dict(parse_qsl(payload, keep_blank_values=True))
        signed_ok = self.owner.signature_ok(self.headers.get("X-MBX-APIKEY"), payload)
        status, answer, delay = self.owner.handle(self.command, url.path, params, signed_ok)
        if delay and self.owner._release.wait(delay):
            return                                      # stopping: drop the answer
        raw = isinstance(answer, bytes)
        data = answer if raw else json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:                                 # the client gave up waiting
            pass

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


__all__ = ["SYMBOL", "FakeBinanceRest"]
