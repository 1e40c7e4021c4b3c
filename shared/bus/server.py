"""The reply side of the bus: a ROUTER socket that reads one request at a time, hands it to the
service's dispatcher and always answers — an error reply for bad input or a handler bug, never
silence and never a dead server."""

from __future__ import annotations

import logging

import zmq

from shared.bus import codec
from shared.bus.endpoints import bind, close, endpoint, ensure_run_dir, heartbeat, secure
from shared.config import Config
from shared.protocol import errors

log = logging.getLogger("bdt.bus")

# Plain ints for the per-message flags: pyzmq's enum versions cost an enum operation per use.
_SNDMORE, _RCVMORE = int(zmq.SNDMORE), int(zmq.RCVMORE)


class BusServer:
    """ROUTER socket answering requests. ``handle(op, args)`` is the caller's dispatcher."""

    def __init__(self, name: str, cfg: Config, ctx: zmq.Context | None = None) -> None:
        self.name, self.cfg = name, cfg
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = endpoint(cfg, name)
        ensure_run_dir(cfg)
        self.socket = self.ctx.socket(zmq.ROUTER)
        # LINGER 0: at shutdown, replies to clients that are gone must not delay exit.
        self.socket.setsockopt(zmq.LINGER, 0)
        # MAXMSGSIZE: an oversize request is dropped by libzmq before it costs us memory.
        self.max_bytes = cfg.get("bus.max_message_bytes")
        self.socket.setsockopt(zmq.MAXMSGSIZE, self.max_bytes)
        heartbeat(self.socket, cfg)
        secure(self.socket, cfg, server=True)
        self._inode = bind(self.socket, self.endpoint)

    def serve_one(self, handle) -> bool:
        """Read one request and send its reply; False when none came within RCVTIMEO."""
        sock = self.socket
        try:
            frames = [sock.recv()]      # frame by frame: recv_multipart costs ~7 µs more
        except zmq.Again:
            return False
        while sock.getsockopt(_RCVMORE):
            frames.append(sock.recv())
        # REQ clients send [identity, b"", payload]; anything else is garbage we answer if we can.
        if len(frames) < 2:
            return True
        identity, payload = frames[0], frames[-1]
        envelope = frames[1:-1]
        op = "?"
        try:
            op, args = codec.parse_request(payload)
            reply = codec.reply_ok(handle(op, args))
        except errors.MessageError as exc:
            log.warning("%s: refused %s request: %s: %s", self.name, op, exc.code, exc)
            reply = codec.reply_error(exc.code, str(exc))
        except Exception as exc:  # a handler bug must not kill the service
            log.exception("%s: op %s failed", self.name, op)
            reply = codec.reply_error(errors.INTERNAL, f"{type(exc).__name__}: {exc}")
        if len(reply) > self.max_bytes:
            reply = codec.reply_error(errors.TOO_LARGE, f"reply of {len(reply)} bytes over the cap")
        sock.send(identity, _SNDMORE)
        for frame in envelope:
            sock.send(frame, _SNDMORE)
        sock.send(reply)
        return True

    def close(self) -> None:
        close(self.socket, self.endpoint, self._inode)


