"""The bot's feed thread: pulls bars from a feed (replay pacing, live websocket) and hands them
to the service loop over an inproc PAIR socket, one at a time — the next bar only when the
service has decided the previous one."""

from __future__ import annotations

import threading

import zmq

from shared.bus import codec
from shared.market.feeds import Feed
from shared.market.files import FeedError


class FeedThread(threading.Thread):
    """Pulls bars from a feed and pushes them, one at a time, into an inproc PAIR socket."""

    def __init__(self, feed: Feed, address: str, go: threading.Event) -> None:
        super().__init__(name="feed", daemon=True)
        self.feed, self.address, self.go = feed, address, go
        self.ready = threading.Event()     # set by the service when the last bar is decided
        self.ready.set()
        self.stop_flag = threading.Event()
        self.finished = False
        self.error: str | None = None

    def _wait(self, event: threading.Event) -> bool:
        while not event.wait(0.1):
            if self.stop_flag.is_set():
                return False
        return not self.stop_flag.is_set()

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        try:
            if not self._wait(self.go):
                return
            for bar in self.feed.bars():
                if not self._wait(self.ready):
                    return
                self.ready.clear()
                sock.send(codec.pack(bar.to_dict()))
            self.finished = True
        except FeedError as exc:
            self.error = str(exc)
        finally:
            close = getattr(self.feed, "close", None)
            if close:
                close()
            sock.close()
