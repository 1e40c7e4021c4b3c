"""The reply side of the bus: a ROUTER socket that reads one request at a time, hands it to the
service's dispatcher and always answers — an error reply for bad input or a handler bug, never
silence and never a dead server."""

from __future__ import annotations

import logging

import zmq

from shared.bus import codec
from shared.bus.endpoints import bind, close, endpoint, ensure_run_dir, heartbeat, secure
from shared.config import Config
from shared.logs import Throttle
from shared.protocol import errors

log = logging.getLogger("bdt.bus")
REFUSAL_LOG_INTERVAL_S = 10.0     # refusals from one peer: one log line per interval at most

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
        self.throttle = Throttle(log, REFUSAL_LOG_INTERVAL_S)

    def serve_one(self, handle) -> bool:
        """Read one request and send its reply; False when none came within RCVTIMEO."""
        sock = self.socket
        try:
            # the identity frame as a Frame: its peer's address, should we refuse, is on it
            head = sock.recv(copy=False)
        except zmq.Again:
            return False
        frames = []                     # frame by frame: recv_multipart costs ~7 µs more
        while sock.getsockopt(_RCVMORE):
            frames.append(sock.recv())
        # REQ clients send [identity, b"", payload]; anything else is garbage we answer if we can.
        if not frames:
            return True
        payload, envelope = frames[-1], frames[:-1]
        op = ""
        try:
            op, args = codec.parse_request(payload)
            reply = codec.reply_ok(handle(op, args))
        except errors.MessageError as exc:
            self._refused(head, op, exc)
            reply = codec.reply_error(exc.code, str(exc))
        except Exception as exc:  # a handler bug must not kill the service
            name = type(exc).__name__
            self.throttle.event(("internal", op, name), f"{self.name}: op {clip(op, 60)} failed",
                                head=f"{self.name}: op {clip(op, 60)} failed", noun="times",
                                detail=clip(f"{name}: {exc}"), kind=name, level=logging.ERROR,
                                exc_info=True)
            reply = codec.reply_error(errors.INTERNAL, f"{type(exc).__name__}: {exc}")
        if len(reply) > self.max_bytes:
            reply = codec.reply_error(errors.TOO_LARGE, f"reply of {len(reply)} bytes over the cap")
        sock.send(head, _SNDMORE)
        for frame in envelope:
            sock.send(frame, _SNDMORE)
        sock.send(reply)
        return True

    def _refused(self, head: zmq.Frame, op: str, exc: errors.MessageError) -> None:
        """A refusal, logged at most about once per interval per peer (``Throttle``)."""
        who = peer(head)
        what = f"a {clip(op, 60)} request" if op else "a request"
        detail = f"{what}: {exc.code}: {clip(str(exc))}"
        self.throttle.event(("refused", who), f"{self.name}: refused {detail} from {who}",
                            head=f"{self.name}: refused", noun="requests", who=who,
                            detail=detail, kind=exc.code)

    def flush(self) -> None:
        """Sum up refusals held back whose interval is over (the service loop calls this)."""
        self.throttle.flush()

    def close(self) -> None:
        close(self.socket, self.endpoint, self._inode)


def peer(frame: zmq.Frame) -> str:
    """Who sent ``frame``, for a log line: ``pid 1234`` on ipc (the kernel's peer credentials),
    the address on tcp."""
    try:
        address = frame.get("Peer-Address")
    except zmq.ZMQError:
        return "an unknown peer"
    parts = address.split(":")
    if len(parts) == 4 and parts[3].isdigit():            # ipc: host:uid:gid:pid
        return f"pid {parts[3]}"
    return address


def clip(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters for a log line (a 1 MiB op name stays a line)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"
