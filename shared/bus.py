"""The bus: ZeroMQ sockets with the codec of shared.codec, named after the zguide patterns.

- Request/reply: ``BusServer`` (ROUTER) answers; ``BusClient`` is the zguide *lazy pirate*:
  REQ with a timeout, on silence close it and retry on a fresh socket, a bounded number of times.
- Streams: ``Publisher`` (PUB) / ``Subscriber`` (SUB) with a high-water mark, so a slow
  subscriber drops messages and never blocks a publisher.
- Endpoints: ``ipc://`` sockets in the 0700 run directory by default; ``tcp://`` only when
  configured, and then always CURVE-encrypted with keys read from files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from shared import codec
from shared.config import Config, ConfigError, load_config

log = logging.getLogger("bdt.bus")

# Plain ints for the per-message flags: pyzmq's enum versions cost an enum operation per use.
_SNDMORE, _RCVMORE = int(zmq.SNDMORE), int(zmq.RCVMORE)

# Every request/reply service, with a fixed offset for tcp ports. A name not here is a typo.
SERVICES = (
    "cache", "history", "predictor", "bot", "monitor", "scheduler", "backtest", "walkforward",
    "dashboard",
)
# Streams and the services that publish them; topics are the stream names.
STREAMS: dict[str, tuple[str, ...]] = {
    "bars": ("bot",),
    "predictions": ("predictor",),
    "events": SERVICES,
}


class BusError(RuntimeError):
    """Base of the errors a caller of the bus sees; the message names service and op."""

    def __init__(self, service: str, op: str, message: str, code: str = codec.INTERNAL) -> None:
        super().__init__(f"{service}.{op}: {message}")
        self.service, self.op, self.code = service, op, code


class ServiceUnavailable(BusError):
    """No server is listening (nothing to connect to within the timeout)."""


class RequestTimeout(BusError):
    """The request was sent but no reply came, on every attempt."""


class BadRequest(BusError):
    """The server refused the request as malformed (the caller's fault)."""


class RemoteError(BusError):
    """The server understood the request and failed to carry it out."""


def ensure_run_dir(cfg: Config) -> Path:
    """The private run directory: sockets there are reachable only by this user."""
    run = cfg.run_dir
    run.mkdir(parents=True, exist_ok=True)
    os.chmod(run, 0o700)
    return run


def _tcp_port(cfg: Config, name: str, pub: bool) -> int:
    return cfg.get("bus.tcp_base_port") + 2 * SERVICES.index(name) + (1 if pub else 0)


def endpoint(cfg: Config, name: str, *, pub: bool = False) -> str:
    """Where service ``name`` listens for requests (or, with pub=True, publishes)."""
    if name not in SERVICES:
        raise ConfigError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    if cfg.get("bus.transport") == "tcp":
        return f"tcp://{cfg.get('bus.tcp_host')}:{_tcp_port(cfg, name, pub)}"
    return f"ipc://{cfg.run_dir / (name + ('.pub' if pub else '') + '.sock')}"


def _ipc_path(ep: str) -> Path | None:
    return Path(ep[len("ipc://"):]) if ep.startswith("ipc://") else None


def _curve_keys(cfg: Config, role: str) -> tuple[bytes, bytes]:
    keys_dir = cfg.get("bus.curve_keys_dir")
    if not keys_dir:
        raise ConfigError("bus.curve_keys_dir: required when bus.transport = 'tcp'")
    path = Path(keys_dir) / f"{role}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"bus.curve_keys_dir: cannot read {path}: {exc}") from None
    if secret is None:
        raise ConfigError(f"bus.curve_keys_dir: {path} holds no secret key")
    return public, secret


def generate_curve_keys(keys_dir: Path) -> None:
    """Write server and client keypairs (``bdt keys``); secret files are mode 0600."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    for role in ("server", "client"):
        zmq.auth.create_certificates(str(keys_dir), role)
        os.chmod(keys_dir / f"{role}.key_secret", 0o600)


def _secure(sock: zmq.Socket, cfg: Config, *, server: bool) -> None:
    if cfg.get("bus.transport") != "tcp":
        return
    server_public, server_secret = _curve_keys(cfg, "server")
    if server:
        sock.curve_secretkey = server_secret
        sock.curve_publickey = server_public
        sock.curve_server = True
    else:
        sock.curve_publickey, sock.curve_secretkey = _curve_keys(cfg, "client")
        sock.curve_serverkey = server_public


def _heartbeat(sock: zmq.Socket, cfg: Config) -> None:
    # ZMTP heartbeats notice a peer that vanished without closing (kill -9, cable) on an
    # idle connection, so reconnects happen before the next message is lost into it.
    ivl = cfg.get("bus.heartbeat_ivl_ms")
    sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ivl * 3)


def _bind(sock: zmq.Socket, ep: str) -> None:
    path = _ipc_path(ep)
    if path is not None and path.exists():
        path.unlink()  # left by a process that was killed -9; the name is ours
    sock.bind(ep)


def _close(sock: zmq.Socket, ep: str | None = None) -> None:
    sock.close(linger=0)
    path = _ipc_path(ep) if ep else None
    if path is not None:
        path.unlink(missing_ok=True)


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
        _heartbeat(self.socket, cfg)
        _secure(self.socket, cfg, server=True)
        _bind(self.socket, self.endpoint)

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
        except codec.MessageError as exc:
            log.warning("%s: refused %s request: %s: %s", self.name, op, exc.code, exc)
            reply = codec.reply_error(exc.code, str(exc))
        except Exception as exc:  # a handler bug must not kill the service
            log.exception("%s: op %s failed", self.name, op)
            reply = codec.reply_error(codec.INTERNAL, f"{type(exc).__name__}: {exc}")
        if len(reply) > self.max_bytes:
            reply = codec.reply_error(codec.TOO_LARGE, f"reply of {len(reply)} bytes over the cap")
        sock.send(identity, _SNDMORE)
        for frame in envelope:
            sock.send(frame, _SNDMORE)
        sock.send(reply)
        return True

    def close(self) -> None:
        _close(self.socket, self.endpoint)


class BusClient:
    """Lazy pirate client: one REQ socket, re-made after every timeout."""

    def __init__(
        self,
        service: str,
        cfg: Config | None = None,
        *,
        timeout_ms: int | None = None,
        retries: int | None = None,
        ctx: zmq.Context | None = None,
    ) -> None:
        self.service = service
        self.cfg = cfg or load_config()
        self.ctx = ctx or zmq.Context.instance()
        self.endpoint = endpoint(self.cfg, service)
        if timeout_ms is None:
            timeout_ms = self.cfg.get("bus.request_timeout_ms")
        self.timeout_ms = timeout_ms
        self.retries = self.cfg.get("bus.request_retries") if retries is None else retries
        self.max_bytes = self.cfg.get("bus.max_message_bytes")
        self._sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self.ctx.socket(zmq.REQ)
            # LINGER 0: a request to a dead server must never keep this process from exiting.
            sock.setsockopt(zmq.LINGER, 0)
            # IMMEDIATE: queue only on a completed connection, so "no server" shows as
            # "cannot send" (unavailable) rather than as a silent timeout.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            # Timeouts on the socket rather than a poll per send/recv (pyzmq builds a Poller for
            # each Socket.poll call: ~20 µs a request).
            sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
            sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
            _heartbeat(sock, self.cfg)
            _secure(sock, self.cfg, server=False)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def call(self, op: str, **args: Any) -> Any:
        payload = codec.request(op, args)
        if len(payload) > self.max_bytes:
            raise BadRequest(self.service, op, f"request of {len(payload)} bytes is over "
                             f"bus.max_message_bytes={self.max_bytes}", codec.TOO_LARGE)
        sent_once = False
        for _attempt in range(self.retries + 1):
            sock = self._socket()
            try:
                sock.send(payload)  # with IMMEDIATE: waits for a completed connection
            except zmq.Again:
                self._reset()
                continue
            sent_once = True
            try:
                data = sock.recv()
            except zmq.Again:
                self._reset()  # lazy pirate: the REQ state machine is stuck; start afresh
                continue
            return self._result(op, data)
        total = (self.retries + 1) * self.timeout_ms
        if not sent_once:
            raise ServiceUnavailable(self.service, op, f"service unavailable: nothing listening "
                                     f"at {self.endpoint} (waited {total} ms)", codec.UNAVAILABLE)
        raise RequestTimeout(self.service, op, f"no reply after {self.retries + 1} attempts "
                             f"of {self.timeout_ms} ms", "timeout")

    def _result(self, op: str, data: bytes) -> Any:
        try:
            msg = codec.parse_reply(data)
        except codec.MessageError as exc:
            raise RemoteError(self.service, op, f"unreadable reply: {exc}", exc.code) from None
        if msg["ok"]:
            return msg.get("result")
        err = msg.get("error") or {}
        code, text = str(err.get("code", codec.INTERNAL)), str(err.get("message", ""))
        cls = BadRequest if code in codec.BAD_REQUEST_CODES else RemoteError
        raise cls(self.service, op, f"{code}: {text}", code)

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        _heartbeat(self.socket, cfg)
        _secure(self.socket, cfg, server=True)
        _bind(self.socket, self.endpoint)

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
        _close(self.socket, self.endpoint)


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
        _heartbeat(self.socket, cfg)
        _secure(self.socket, cfg, server=False)
        publishers = sorted({p for s in self.streams for p in STREAMS[s]})
        for name in publishers:
            self.socket.connect(endpoint(cfg, name, pub=True))
        for stream in self.streams:
            self.socket.setsockopt(zmq.SUBSCRIBE, stream.encode())

    def receive(self, timeout_ms: int | None = None) -> StreamMessage | None:
        """Next valid message, or None on timeout / a malformed one (logged and dropped)."""
        if timeout_ms is not None and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.socket.recv_multipart()
        stream = frames[0].decode(errors="replace") if frames else ""
        if len(frames) != 2 or stream not in self.streams:
            log.warning("dropped a stream message with %d frames on topic %r", len(frames), stream)
            return None
        try:
            return StreamMessage(stream, codec.parse_stream(frames[1], stream))
        except codec.MessageError as exc:
            log.warning("dropped a malformed %s message: %s", stream, exc)
            return None

    def close(self) -> None:
        self.socket.close(linger=0)


def wait_for(service: str, cfg: Config, timeout_s: float = 10.0) -> dict[str, Any]:
    """Ping until the service answers (tests, start-up ordering); raise the last error."""
    deadline = time.monotonic() + timeout_s
    with BusClient(service, cfg, timeout_ms=200, retries=0) as client:
        while True:
            try:
                return client.call("ping")
            except BusError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
