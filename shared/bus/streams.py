"""Streams: ``Publisher`` (XPUB) / ``Subscriber`` (SUB) with a high-water mark, so a slow
subscriber drops messages and never blocks a publisher. Topics are the stream names of
``shared.bus.endpoints.STREAMS``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import zmq

from shared.bus import codec
from shared.bus.endpoints import STREAMS, bind, close, endpoint, heartbeat, secure
from shared.bus.server import REFUSAL_LOG_INTERVAL_S, clip, peer
from shared.config import Config
from shared.logs import Throttle
from shared.protocol import errors

log = logging.getLogger("bdt.bus")


class Publisher:
    """XPUB socket of one service; every stream that service publishes goes through it.

    XPUB rather than PUB so the publisher sees (un)subscriptions: with XPUB_VERBOSER every
    subscriber's subscribe and unsubscribe reaches us, so ``subscribers(stream)`` counts live
    subscribers — the cure for the zguide's "slow joiner" (a publisher can wait for its
    consumers before the first message instead of losing it).
    """

    def __init__(self, name: str, cfg: Config, ctx: zmq.Context | None = None) -> None:
        self.name = name
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = endpoint(cfg, name, pub=True)
        self.socket = self.ctx.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._subscribers: dict[bytes, int] = {}
        # SNDHWM: past this many queued messages per subscriber, PUB drops for that one
        # subscriber instead of blocking the publisher (a slow reader never stalls trading).
        self.socket.setsockopt(zmq.SNDHWM, cfg.get("bus.stream_hwm"))
        self.socket.setsockopt(zmq.LINGER, 0)
        heartbeat(self.socket, cfg)
        secure(self.socket, cfg, server=True)
        self._inode = bind(self.socket, self.endpoint)

    def publish(self, stream: str, fields: dict[str, Any]) -> None:
        if stream not in STREAMS or self.name not in STREAMS[stream]:
            raise ValueError(f"{self.name} does not publish stream {stream!r}")
        self.socket.send_multipart([stream.encode(), codec.stream_message(stream, fields)])

    def read_subscriptions(self) -> None:
        """Drain pending (un)subscription messages: 0x01/0x00 followed by the topic."""
        while self.socket.poll(0, zmq.POLLIN):
            msg = self.socket.recv()
            if msg:
                delta = 1 if msg[0] == 1 else -1
                topic = msg[1:]
                self._subscribers[topic] = max(0, self._subscribers.get(topic, 0) + delta)

    def subscribers(self, stream: str) -> int:
        self.read_subscriptions()
        return self._subscribers.get(stream.encode(), 0)

    def close(self) -> None:
        close(self.socket, self.endpoint, self._inode)


@dataclass
class StreamMessage:
    stream: str
    fields: dict[str, Any]


class Subscriber:
    """SUB socket connected to every publisher of the given streams."""

    def __init__(self, streams: Iterable[str], cfg: Config, ctx: zmq.Context | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.streams = tuple(streams)
        self.socket = self.ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, cfg.get("bus.stream_hwm"))
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, cfg.get("bus.max_message_bytes"))
        heartbeat(self.socket, cfg)
        secure(self.socket, cfg, server=False)
        publishers = sorted({p for s in self.streams for p in STREAMS[s]})
        for name in publishers:
            self.socket.connect(endpoint(cfg, name, pub=True))
        for stream in self.streams:
            self.socket.setsockopt(zmq.SUBSCRIBE, stream.encode())
        self.throttle = Throttle(log, REFUSAL_LOG_INTERVAL_S)

    def receive(self, timeout_ms: int | None = None) -> StreamMessage | None:
        """Next valid message, or None on timeout / a malformed one (dropped, and logged at
        most about once per interval per publisher: ``Throttle``)."""
        if timeout_ms is not None and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        head = self.socket.recv(copy=False)      # a Frame: the publisher's address is on it
        frames = [head.bytes]
        while self.socket.getsockopt(zmq.RCVMORE):
            frames.append(self.socket.recv())
        stream = frames[0].decode(errors="replace")
        if len(frames) != 2 or stream not in self.streams:
            self._dropped(head, f"a message with {len(frames)} frames on topic {stream!r}",
                          "bad_topic")
            return None
        try:
            return StreamMessage(stream, codec.parse_stream(frames[1], stream))
        except errors.MessageError as exc:
            self._dropped(head, f"a malformed {stream} message: {exc.code}: {clip(str(exc))}",
                          exc.code)
            return None

    def _dropped(self, head: zmq.Frame, detail: str, kind: str) -> None:
        who = peer(head)
        self.throttle.event(who, f"dropped {detail} from {who}", head="dropped",
                            noun="stream messages", who=who, detail=detail, kind=kind)

    def flush(self) -> None:
        """Sum up drops held back whose interval is over (the service loop calls this)."""
        self.throttle.flush()

    def close(self) -> None:
        self.socket.close(linger=0)


