"""A local stand-in for Binance spot's signed REST order endpoints, good enough for sync ccxt.

ccxt's binance sends spot trading calls to ``urls['api']['private'] + '/<path>'`` (``public`` for
unsigned ones), so ``ccxt_options()`` points both at this server and pre-loads the BTC/USDT market:
ccxt then never asks for ``exchangeInfo``. Served: ``POST/GET/DELETE /api/v3/order``,
``GET /api/v3/openOrders``, ``GET /api/v3/myTrades``, ``GET /api/v3/time``; anything else answers
404 and is listed in ``unexpected``. Errors use Binance's codes and messages, which is how ccxt
picks its exception classes. Fees are charged in the quote asset (USDT).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fake_exchange import MARKET_ID, SYMBOL, binance_market

DUPLICATE = (-2010, "Duplicate order sent.")
INSUFFICIENT = (-2010, "Account has insufficient balance for requested action.")
NO_SUCH_ORDER = (-2013, "Order does not exist.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
OPEN_STATES = ("NEW", "PARTIALLY_FILLED")


def spot_market() -> dict[str, Any]:
    """The colleague's ccxt market plus the ``orderTypes`` ccxt's create_order checks."""
    market = binance_market()
    market["info"] = {"symbol": MARKET_ID, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"]}
    return market


def _num(value: float) -> str:
    return f"{value:.8f}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Server(ThreadingMixIn, HTTPServer):
    # non-daemon, tracked handler threads: server_close() joins every one of them
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True


class FakeBinanceRest:
    """HTTP server on 127.0.0.1 (free port) with one thread per request; thread-safe controls.

    ``duplicate_scope`` is ``"any"`` (a client id is refused if any earlier order used it) or
    ``"open"`` (refused only while that order is open, which is what Binance documents).
    """

    def __init__(self, *, api_key: str | None = None, secret: str | None = None,
                 price: float = 50_000.0, fee_rate: float = 0.001,
                 duplicate_scope: str = "any") -> None:
        assert duplicate_scope in ("any", "open")
        self.api_key, self.secret = api_key, secret
        self.price, self.fee_rate, self.duplicate_scope = price, fee_rate, duplicate_scope
        self.requests: list[tuple[str, str]] = []        # (method, path) of every request
        self.unexpected: list[tuple[str, str]] = []      # requests this fake does not serve
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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def ccxt_options(self) -> dict[str, Any]:
        """Exchange options pointing ccxt's binance spot REST at this server, market pre-set."""
        api = f"{self.base_url}/api/v3"
        return {"urls": {"api": {"public": api, "private": api}},
                "markets": {SYMBOL: spot_market()}}

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

    def _fill(self, order: dict[str, Any], price: float, *, maker: bool,
              qty: float | None = None) -> dict[str, Any]:
        left = float(order["origQty"]) - float(order["executedQty"])
        qty = left if qty is None else min(qty, left)
        now = _now_ms()
        trade = {
            "symbol": MARKET_ID, "id": next(self._trade_ids), "orderId": order["orderId"],
            "orderListId": -1, "price": _num(price), "qty": _num(qty),
            "quoteQty": _num(qty * price), "commission": _num(qty * price * self.fee_rate),
            "commissionAsset": "USDT", "time": now, "isBuyer": order["side"] == "BUY",
            "isMaker": maker, "isBestMatch": True,
        }
        self.trades.append(trade)
        order["executedQty"] = _num(float(order["executedQty"]) + qty)
        order["cummulativeQuoteQty"] = _num(float(order["cummulativeQuoteQty"]) + qty * price)
        order["status"] = "FILLED" if qty >= left - 1e-12 else "PARTIALLY_FILLED"
        order["updateTime"] = now
        return trade

    def _new_order(self, p: dict[str, str]) -> tuple[int, Any, float]:
        """(HTTP status, body, seconds to hold the answer) for POST /api/v3/order."""
        cid = p.get("newClientOrderId", "")
        with self._lock:
            self.create_requests[cid] += 1
            delay, record = self._delay_next or (0.0, True)
            self._delay_next = None
            if not record:
                return 200, {}, delay
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
            now = _now_ms()
            order = {
                "symbol": MARKET_ID, "orderId": next(self._ids), "orderListId": -1,
                "clientOrderId": cid, "price": _num(float(p.get("price", 0))),
                "origQty": _num(float(p["quantity"])), "executedQty": _num(0),
                "cummulativeQuoteQty": _num(0), "status": "NEW",
                "timeInForce": p.get("timeInForce", "GTC"), "type": kind, "side": p["side"],
                "stopPrice": _num(0), "icebergQty": _num(0), "time": now, "updateTime": now,
                "isWorking": True, "workingTime": now, "origQuoteOrderQty": _num(0),
                "selfTradePreventionMode": "NONE",
            }
            self.orders[order["orderId"]] = order
            self.created[cid] += 1
            fills = []
            if kind == "MARKET" or self._crosses(order, self.price):
                fills.append(self._fill(order, self.price, maker=False))
            body = {k: order[k] for k in ("symbol", "orderId", "orderListId", "clientOrderId",
                                          "price", "origQty", "executedQty",
                                          "cummulativeQuoteQty", "status", "timeInForce",
                                          "type", "side", "workingTime",
                                          "selfTradePreventionMode")}
            body["transactTime"] = now
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
        with self._lock:
            order = self._find(p.get("orderId"), p.get("origClientOrderId"))
            if order is None or order["status"] not in OPEN_STATES:
                return 400, _error(*UNKNOWN_ORDER)
            order["status"], order["updateTime"] = "CANCELED", _now_ms()
            body = {k: order[k] for k in ("symbol", "orderId", "orderListId", "price",
                                          "origQty", "executedQty", "cummulativeQuoteQty",
                                          "status", "timeInForce", "type", "side")}
            body.update(origClientOrderId=order["clientOrderId"],
                        clientOrderId=f"cancel{order['orderId']}", transactTime=_now_ms())
            return 200, body

    def handle(self, method: str, path: str, params: dict[str, str],
               signed_ok: bool) -> tuple[int, Any, float]:
        with self._lock:
            self.requests.append((method, path))
        route = (method, path)
        if route == ("GET", "/api/v3/time"):
            return 200, {"serverTime": _now_ms()}, 0.0
        if route not in (("POST", "/api/v3/order"), ("GET", "/api/v3/order"),
                         ("DELETE", "/api/v3/order"), ("GET", "/api/v3/openOrders"),
                         ("GET", "/api/v3/myTrades")):
            with self._lock:
                self.unexpected.append(route)
            return 404, _error(-1, f"fake: {method} {path} is not served"), 0.0
        if not signed_ok:
            return 401, _error(-2015, "Invalid API-key, IP, or permissions for action."), 0.0
        if method == "POST":
            return self._new_order(params)
        if method == "DELETE":
            return (*self._cancel_order(params), 0.0)
        if path == "/api/v3/order":
            return (*self._query_order(params), 0.0)
        with self._lock:
            if path == "/api/v3/openOrders":
                return 200, [dict(o) for o in self.orders.values()
                             if o["status"] in OPEN_STATES], 0.0
            order_id = params.get("orderId")
            return 200, [dict(t) for t in self.trades
                         if order_id is None or str(t["orderId"]) == order_id], 0.0

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
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:                                 # the client gave up waiting
            pass

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass
