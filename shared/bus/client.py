"""The request side of the bus: ``BusClient`` is the zguide *lazy pirate* — REQ with a timeout;
on silence close it and retry on a fresh socket, a bounded number of times. Every error a
caller sees names the service and the op."""

from __future__ import annotations

import time
from typing import Any

import zmq

from shared.bus import codec
from shared.bus.endpoints import endpoint, heartbeat, secure
from shared.config import Config, load_config
from shared.protocol import errors
from shared.protocol.tables import ops_of


class BusError(RuntimeError):
    """Base of the errors a caller of the bus sees; the message names service and op."""

    def __init__(self, service: str, op: str, message: str, code: str = errors.INTERNAL) -> None:
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
        # ops applied twice if resent (e.g. cache incr): sent at most once, never retried
        # after the request left; a send that found no connection is still retried.
        self._once = {o.name for o in ops_of(service) if not o.idempotent}

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
            heartbeat(sock, self.cfg)
            secure(sock, self.cfg, server=False)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def call(self, op: str, **args: Any) -> Any:
        try:
            payload = codec.request(op, args)
        except errors.MessageError as exc:
            raise BadRequest(self.service, op, f"{exc.code}: {exc}", exc.code) from None
        if len(payload) > self.max_bytes:
            raise BadRequest(self.service, op, f"request of {len(payload)} bytes is over "
                             f"bus.max_message_bytes={self.max_bytes}", errors.TOO_LARGE)
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
                if op in self._once:
                    raise RequestTimeout(
                        self.service, op, f"no reply within {self.timeout_ms} ms; not resent "
                        f"because {op} is not idempotent: it may or may not have been applied",
                        errors.TIMEOUT) from None
                continue
            return self._result(op, data)
        total = (self.retries + 1) * self.timeout_ms
        if not sent_once:
            raise ServiceUnavailable(self.service, op, f"service unavailable: nothing listening "
                                     f"at {self.endpoint} (waited {total} ms)", errors.UNAVAILABLE)
        raise RequestTimeout(self.service, op, f"no reply after {self.retries + 1} attempts "
                             f"of {self.timeout_ms} ms", errors.TIMEOUT)

    def _result(self, op: str, data: bytes) -> Any:
        try:
            msg = codec.parse_reply(data)
        except errors.MessageError as exc:
            raise RemoteError(self.service, op, f"unreadable reply: {exc}", exc.code) from None
        if msg["ok"]:
            return msg.get("result")
        err = msg.get("error") or {}
        code, text = str(err.get("code", errors.INTERNAL)), str(err.get("message", ""))
        cls = BadRequest if code in errors.BAD_REQUEST_CODES else RemoteError
        raise cls(self.service, op, f"{code}: {text}", code)

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
