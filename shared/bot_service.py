"""bot: runs the market feed and publishes each closed bar on the `bars` stream.

The feed (replay pacing, live websocket) runs in its own thread and hands bars to the
service loop over an inproc socket, so a new bar wakes the loop at once and every bus socket
stays in the one thread that owns it. Strategy, risk and execution come with the bot issue.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import zmq

from shared import codec
from shared.bus import BusClient, BusError
from shared.config import Config
from shared.feeds import Feed, FeedError, SyntheticFeed, open_feed
from shared.market import Bar, BarGate, bars_to_columns, timeframe_ms
from shared.service import Service, require


def history_last_ts(cfg: Config, symbol: str) -> int | None:
    """Where the store ends, so a restarted bot resumes after it instead of replaying twice."""
    try:
        with BusClient("history", cfg, timeout_ms=2000, retries=2) as history:
            reply = history.call("latest", symbol=symbol, n=1)
    except BusError:
        return None
    return reply["ts"][-1] if reply["ts"] else None


class FeedThread(threading.Thread):
    """Pulls bars from a feed and pushes them, msgpack-packed, into an inproc PAIR socket."""

    def __init__(self, feed: Feed, address: str, go: threading.Event) -> None:
        super().__init__(name="feed", daemon=True)
        self.feed, self.address, self.go = feed, address, go
        self.stop_flag = threading.Event()
        self.finished = False
        self.error: str | None = None

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        try:
            while not self.go.wait(0.1):
                if self.stop_flag.is_set():
                    return
            for bar in self.feed.bars():
                if self.stop_flag.is_set():
                    return
                sock.send(codec.pack(bar.to_dict()))
            self.finished = True
        except FeedError as exc:
            self.error = str(exc)
        finally:
            close = getattr(self.feed, "close", None)
            if close:
                close()
            sock.close()


class BotService(Service):
    name = "bot"
    summary = "market feed and bar publisher (strategy and execution: not yet)"
    publishes = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.symbol = cfg.get("market.symbols")[0]
        self.timeframe = timeframe_ms(cfg.get("market.timeframe"))
        self.gate = BarGate(self.timeframe)
        self.recent: collections.deque[Bar] = collections.deque(maxlen=cfg.get("bot.recent_bars"))
        self.published = 0
        self.last_bar: Bar | None = None
        resume = history_last_ts(cfg, self.symbol)
        self.feed = open_feed(cfg, self.symbol, start_after=resume)
        if resume is not None and isinstance(self.feed, SyntheticFeed):
            self.feed.market.skip_until(resume)
        self.log.info("feed %s for %s, resuming after %s", self.feed.name, self.symbol, resume)
        self.go = threading.Event()
        self.wait_started = time.monotonic()
        address = f"inproc://feed-{id(self)}"
        self.inbox = zmq.Context.instance().socket(zmq.PAIR)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(address)
        self.feed_thread = FeedThread(self.feed, address, self.go)
        self.feed_thread.start()

    def extra_sockets(self):
        return [(self.inbox, self._on_feed_bar)]

    def tick(self) -> None:
        if self.go.is_set() or self.publisher is None:
            return
        wanted = self.cfg.get("bot.wait_subscribers")
        have = self.publisher.subscribers("bars")
        waited = time.monotonic() - self.wait_started
        if have >= wanted:
            self.log.info("%d bar subscriber(s) connected: starting the feed", have)
            self.go.set()
        elif waited > self.cfg.get("bot.wait_subscribers_timeout_s"):
            self.log.warning("only %d of %d bar subscribers after %.0f s: starting anyway",
                             have, wanted, waited)
            self.go.set()

    tick_interval_s = 0.1

    def _on_feed_bar(self) -> None:
        bar = Bar.from_dict(codec.unpack(self.inbox.recv()))
        problem = self.gate.check(bar)
        if problem:
            self.log.warning("feed bar at %d rejected: %s", bar.ts, problem)
            return
        self.publish("bars", bar.to_dict())
        self.recent.append(bar)
        self.published += 1
        self.last_bar = bar

    def close(self) -> None:
        self.feed_thread.stop_flag.set()
        self.go.set()
        self.feed_thread.join(2)
        self.inbox.close(linger=0)

    def service_status(self) -> dict[str, Any]:
        return {
            "feed": self.feed.name, "symbol": self.symbol, "started": self.go.is_set(),
            "feed_finished": self.feed_thread.finished, "feed_error": self.feed_thread.error,
            "bars_published": self.published, "bars_rejected": self.gate.rejected,
            "last_bar": self.last_bar.to_dict() if self.last_bar else None,
            "bar_subscribers": self.publisher.subscribers("bars") if self.publisher else 0,
            "not_yet": "no strategy, risk or orders yet: publishes bars only",
        }

    def op_bars_since(self, args: dict[str, Any]) -> dict[str, Any]:
        """Published bars with after < ts < before (history's gap backfill)."""
        symbol = require(args, "symbol", str)
        after = require(args, "after", int)
        before = require(args, "before", int, 2**62)
        bars = [b for b in self.recent if b.symbol == symbol and after < b.ts < before]
        return bars_to_columns(symbol, bars)
