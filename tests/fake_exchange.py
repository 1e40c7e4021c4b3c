"""A local stand-in for Binance spot's public WebSocket trade stream, good enough for ccxt.pro.

ccxt.pro's binance ``watch_trades`` connects to ``urls['api']['ws']['spot'] + '/<n>'``, sends
``{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": n}``, ignores the
``{"result": null, "id": n}`` ack and turns ``{"e": "trade", ...}`` events into trades. Markets
are pre-set through the constructor options (``ccxt_options()``), so no REST call is made.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

SYMBOL, MARKET_ID = "BTC/USDT", "BTCUSDT"


def binance_market(symbol: str = SYMBOL, market_id: str = MARKET_ID) -> dict[str, Any]:
    """The fields of a ccxt spot market that watch_trades and trade parsing read."""
    base, quote = symbol.split("/")
    return {
        "id": market_id, "lowercaseId": market_id.lower(), "symbol": symbol,
        "base": base, "quote": quote, "baseId": base, "quoteId": quote, "settle": None,
        "type": "spot", "spot": True, "margin": False, "swap": False, "future": False,
        "option": False, "contract": False, "linear": None, "inverse": None, "active": True,
        "precision": {"amount": 1e-8, "price": 0.01}, "limits": {}, "info": {},
    }


class FakeBinance:
    """WebSocket server on 127.0.0.1 (free port) in its own thread and event loop."""

    def __init__(self) -> None:
        self.connections = 0                        # connections ever accepted
        self.subscriptions: list[list[str]] = []    # params of every SUBSCRIBE received
        self._open: set[ServerConnection] = set()
        self._subscribed: set[ServerConnection] = set()
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def ccxt_options(self) -> dict[str, Any]:
        """Constructor options pointing ccxt.pro's binance at this server, markets pre-loaded."""
        return {"urls": {"api": {"ws": {"spot": self.ws_url}}},
                "markets": {SYMBOL: binance_market()}}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeBinance:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._serve(ready))
            except BaseException as exc:
                failure.append(exc)
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="fake-binance", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or not self.port:
            self.stop()
            raise RuntimeError("fake exchange failed to start") from (failure or [None])[0]
        return self

    def stop(self) -> None:
        """Close the server and every connection, and end the thread."""
        if self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            try:
                loop.call_soon_threadsafe(lambda: stopping.done() or stopping.set_result(None))
            except RuntimeError:    # loop already closed
                pass
        self._thread.join(10)
        self._thread = None

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = self._loop.create_future()
        async with serve(self._handler, "127.0.0.1", 0, ping_interval=None) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stopping

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls --------------------------------------------------------------------

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        assert self._loop is not None, "server not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def wait_subscriptions(self, n: int, timeout: float = 10.0) -> bool:
        """Block until ``n`` SUBSCRIBE messages have been received (in total)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.subscriptions) >= n, timeout)

    def send_trades(self, trades: list[dict[str, Any]]) -> int:
        """Push trades ``{"id", "ts", "price", "amount", "side"?}`` to every subscribed
        connection, one event each, as Binance does. Returns how many connections got them."""
        events = [json.dumps({
            "e": "trade", "E": t["ts"], "s": MARKET_ID, "t": t["id"],
            "p": str(t["price"]), "q": str(t["amount"]), "T": t["ts"],
            "m": t.get("side", "buy") == "sell", "M": True,
        }) for t in trades]
        return self._call(self._broadcast(events))

    def drop_connections(self) -> int:
        """Close every open connection (as a server restart would); returns how many."""
        return self._call(self._drop())

    # -- server side ----------------------------------------------------------------------

    async def _broadcast(self, events: list[str]) -> int:
        targets = list(self._subscribed)
        for ws in targets:
            for event in events:
                try:
                    await ws.send(event)
                except ConnectionClosed:
                    break
        return len(targets)

    async def _drop(self) -> int:
        targets = list(self._open)
        for ws in targets:
            await ws.close(code=1001, reason="fake exchange going away")
        return len(targets)

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self._open.add(ws)
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("method") == "SUBSCRIBE":
                    await ws.send(json.dumps({"result": None, "id": msg.get("id")}))
                    self._subscribed.add(ws)
                    with self._cond:
                        self.subscriptions.append(list(msg.get("params", [])))
                        self._cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self._open.discard(ws)
            self._subscribed.discard(ws)
