"""The live feed: trades from any ccxt.pro exchange via ``watch_trades``, built into closed bars.

The project is synchronous, so the asyncio side (ccxt.pro) runs in one background thread and
hands closed bars over a bounded queue. ccxt.pro does not reconnect by itself: a dropped socket
makes ``watch_trades`` raise, and the next call dials again — so we retry with backoff and mark
what may have been lost while away as a gap.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.pro as ccxtpro

from shared.market.bars import Bar, Trade
from shared.market.builder import BarBuilder
from shared.market.files import FeedError

log = logging.getLogger("bdt.feed.live")

# errors that retrying cannot fix: wrong symbol, unsupported call, bad credentials
_FATAL = (ccxt.BadRequest, ccxt.NotSupported, ccxt.AuthenticationError, ccxt.PermissionDenied)


def _now_ms() -> int:
    return int(time.time() * 1000)


class LiveFeed:
    """Closed bars of ``symbol`` from ``exchange_id``'s public trade stream."""

    name = "live"

    def __init__(self, exchange_id: str, symbol: str, timeframe: int, *,
                 exchange_options: dict[str, Any] | None = None, max_backoff_s: float = 30.0,
                 initial_backoff_s: float = 0.5, grace_ms: int = 1_000,
                 queue_size: int = 1_000, recent_ids: int = 10_000) -> None:
        cls = getattr(ccxtpro, exchange_id, None) if exchange_id in ccxtpro.exchanges else None
        if cls is None:
            why = "ccxt has it REST-only, without WebSocket support" \
                if exchange_id in ccxt.exchanges else "unknown to ccxt"
            raise FeedError(f"exchange {exchange_id!r}: {why}; live feeds need one of "
                            f"ccxt.pro.exchanges")
        self.exchange = cls({"newUpdates": True, **(exchange_options or {})})
        if not self.exchange.has.get("watchTrades"):
            raise FeedError(f"exchange {exchange_id!r}: ccxt.pro has no watchTrades for it")
        self.exchange_id, self.symbol, self.timeframe = exchange_id, symbol, timeframe
        self.initial_backoff_s, self.max_backoff_s = initial_backoff_s, max_backoff_s
        # trades arrive after their timestamp; closing a bar exactly at its end would turn
        # in-flight trades into late ones, so the timer waits ``grace_ms`` past the boundary
        self.grace_ms = grace_ms
        self.builder = BarBuilder(symbol, timeframe)
        self.gaps: list[dict[str, Any]] = []
        self.max_gaps = 1_000
        self.trades_seen = 0
        self.duplicates = 0
        self.reconnects = 0
        self.dropped_bars = 0
        self.last_trade_ts: int | None = None
        self._last_id: str | None = None
        self._recent: dict[str, None] = {}      # insertion-ordered set of recent trade ids
        self._recent_max = recent_ids
        self._after_reconnect = False
        self._queue: queue.Queue[Bar] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # -- synchronous side -----------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (``bars()`` does this on first use)."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name=f"live-{self.exchange_id}",
                                            daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def bars(self) -> Iterator[Bar]:
        """Closed bars as they close; ends after ``close()``, raises FeedError on a fatal error."""
        self.start()
        while True:
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._done.is_set() or (self._thread is None and self._stop.is_set()):
                    break
        if self._error is not None:
            raise FeedError(f"live feed {self.exchange_id} {self.symbol}: "
                            f"{type(self._error).__name__}: {self._error}") from self._error

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread; the exchange's sockets and session are closed on its way out."""
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:    # loop already closed: the thread is finishing
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("live feed thread did not stop within %.1f s", timeout)

    def __enter__(self) -> LiveFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- asyncio side (background thread) -------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self._error = exc
            log.error("live feed stopped: %s: %s", type(exc).__name__, exc)
        finally:
            self._done.set()

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        ticker = asyncio.create_task(self._tick())
        try:
            if not self._stop.is_set():     # close() may have come before the task existed
                await self._watch()
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await self.exchange.close()

    async def _tick(self) -> None:
        """Close the open bar on time even when no trade comes to close it."""
        period = min(self.timeframe / 4_000, 1.0)
        while True:
            await asyncio.sleep(period)
            bar = self.builder.close_due(_now_ms() - self.grace_ms)
            if bar is not None:
                self._emit(bar)

    async def _watch(self) -> None:
        backoff = self.initial_backoff_s
        failing = False
        while not self._stop.is_set():
            try:
                trades = await self.exchange.watch_trades(self.symbol)
            except _FATAL:
                raise
            except Exception as exc:  # NetworkError, closed socket, exchange hiccups
                self.reconnects += 1
                self._after_reconnect = failing = True
                log.warning("%s %s: watch_trades failed (%s: %s); reconnect #%d in %.1f s",
                            self.exchange_id, self.symbol, type(exc).__name__, exc,
                            self.reconnects, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if failing:
                log.info("%s %s: receiving again after %d reconnect(s)", self.exchange_id,
                         self.symbol, self.reconnects)
                failing, backoff = False, self.initial_backoff_s
            for raw in trades:
                self._on_trade(raw)

    def _on_trade(self, raw: dict[str, Any]) -> None:
        ts, price, amount = raw.get("timestamp"), raw.get("price"), raw.get("amount")
        if ts is None or price is None or amount is None:
            return
        tid = None if raw.get("id") is None else str(raw["id"])
        if tid is not None:
            if tid in self._recent:
                self.duplicates += 1
                return
            self._recent[tid] = None
            if len(self._recent) > self._recent_max:
                del self._recent[next(iter(self._recent))]
        self._check_gap(tid, ts)
        self.trades_seen += 1
        self.last_trade_ts, self._last_id = ts, tid
        trade = Trade(self.symbol, ts, float(price), float(amount), raw.get("side") or "", tid)
        bar = self.builder.add(trade)
        if bar is not None:
            self._emit(bar)

    def _check_gap(self, tid: str | None, ts: int) -> None:
        """A gap where trades may be missing: after a reconnect (unless the ids prove nothing
        was lost), when numeric ids skip, or when trade time jumps by more than a timeframe."""
        prev_id, prev_ts = self._last_id, self.last_trade_ts
        step = int(tid) - int(prev_id) \
            if tid and prev_id and tid.isdigit() and prev_id.isdigit() else None
        reasons = []
        if self._after_reconnect:
            self._after_reconnect = False
            if step != 1:
                reasons.append("reconnect")
        if step is not None and step > 1:
            reasons.append(f"trade ids jump {prev_id} -> {tid}")
        if prev_ts is not None and ts - prev_ts > self.timeframe:
            reasons.append(f"trade time jumps {ts - prev_ts} ms")
        if reasons and prev_ts is not None:
            gap = {"from_ts": prev_ts, "to_ts": ts, "reason": "; ".join(reasons)}
            self.gaps.append(gap)
            del self.gaps[:-self.max_gaps]
            log.warning("%s %s: gap %s", self.exchange_id, self.symbol, gap)

    def _emit(self, bar: Bar) -> None:
        """Never block the loop: if the consumer falls behind, drop the oldest bar."""
        while True:
            try:
                self._queue.put_nowait(bar)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped_bars += 1
                    log.warning("bar queue full: oldest bar dropped (%d so far)",
                                self.dropped_bars)
                except queue.Empty:
                    pass
