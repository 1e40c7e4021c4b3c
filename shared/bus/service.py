"""The shell every long-running process shares: config, logging, the request socket, stream
subscriptions, periodic work, and a clean exit on SIGTERM (supervisord's stop signal).

A service is a class with an op table (``shared.protocol``: each op declared once) and one
``op_<name>(args)`` method per declared op, which receives the arguments already checked and
completed with defaults; an optional ``tick()`` and optional stream handlers;
``run(ServiceClass)`` does the rest.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil
import zmq

from shared.bus.endpoints import InstanceLocked, hold_instance_lock, release_instance_lock
from shared.bus.server import REFUSAL_LOG_INTERVAL_S, BusServer, clip
from shared.bus.streams import Publisher, StreamMessage, Subscriber
from shared.config import Config, ConfigError, load_config
from shared.logs import Throttle, setup_logging
from shared.protocol import errors
from shared.protocol.common import table
from shared.protocol.ops import OpTable


def percentiles(samples: Iterable[float]) -> dict[str, float | None]:
    """p50/p99/max in µs of recent timings, for ``status`` replies and benchmarks."""
    values = sorted(samples)
    if not values:
        return {"p50_us": None, "p99_us": None, "max_us": None, "n": 0}

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {"p50_us": pick(0.50), "p99_us": pick(0.99), "max_us": round(values[-1], 1),
            "n": len(values)}


class Service:
    """Base class. Subclasses set ``name``, ``summary`` and ``ops`` (their op table) and add
    one ``op_<name>`` method per op of the table that is not common to every service."""

    name = "service"
    summary = ""
    ops: OpTable = table("service")
    streams_in: tuple[str, ...] = ()   # streams this service subscribes to
    publishes = False                  # whether it binds a PUB socket
    tick_interval_s = 1.0

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.log = logging.getLogger(f"bdt.{self.name}")
        self.started_at = time.time()
        self.publisher: Publisher | None = None
        self.timings: dict[str, collections.deque[float]] = {}
        self.throttle = Throttle(self.log, REFUSAL_LOG_INTERVAL_S)

    def ignored(self, what: str, text: str) -> None:
        """A message from another process ignored (malformed, or refused by a check): ``text``
        logged at once, and more of the same ``what`` (a plural: "malformed bar messages")
        within the interval only counted, in one line when it is over (``Throttle``)."""
        self.throttle.event(what, text, head="ignored", noun=what)

    def timing(self, name: str) -> collections.deque[float]:
        """A ring of the latest 5000 samples (µs) of one timing, reported by ``latency``."""
        return self.timings.setdefault(name, collections.deque(maxlen=5000))

    # --- hooks -----------------------------------------------------------------------------
    def tick(self) -> None:
        """Periodic work, at most every ``tick_interval_s``."""

    def on_stream(self, msg: StreamMessage) -> None:
        """One message from a subscribed stream."""

    def service_status(self) -> dict[str, Any]:
        """What this service adds to ``status``."""
        return {}

    def close(self) -> None:
        """Release what the subclass holds."""

    def extra_sockets(self) -> list[tuple[zmq.Socket, Callable[[], None]]]:
        """Further sockets for the poll loop, each with the callback run when it is readable
        (e.g. an inproc socket a feed thread writes to, so a new bar wakes the loop at once)."""
        return []

    # --- built-in ops ----------------------------------------------------------------------
    def op_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "service": self.name, "pid": os.getpid()}

    def op_latency(self, args: dict[str, Any]) -> dict[str, Any]:
        """p50/p99 of each timing over its ``last`` samples only (a benchmark's own window)."""
        last = args["last"]
        return {name: percentiles(list(ring)[-last:]) for name, ring in self.timings.items()}

    def op_status(self, args: dict[str, Any]) -> dict[str, Any]:
        proc = psutil.Process()
        return {
            "service": self.name,
            "summary": self.summary,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "rss_bytes": proc.memory_info().rss,
            "ops": sorted(op.name for op in self.ops),
            **self.service_status(),
        }

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Check the request against the op's declaration, then run its ``op_`` method."""
        spec = self.ops.get(op)
        if spec is None:
            raise errors.MessageError(errors.UNKNOWN_OP, f"{self.name} has no op {op!r}; "
                                      f"ops: {', '.join(o.name for o in self.ops)}")
        method: Callable[[dict[str, Any]], Any] = getattr(self, f"op_{op}")
        return method(spec.check(args))

    def publish(self, stream: str, fields: dict[str, Any]) -> None:
        if self.publisher is None:
            raise RuntimeError(f"{self.name} does not publish")
        self.publisher.publish(stream, fields)


class Runner:
    """Owns the sockets and the poll loop of one Service instance."""

    def __init__(self, service: Service) -> None:
        self.service = service
        cfg = service.cfg
        self.server = BusServer(service.name, cfg)
        if service.publishes:
            service.publisher = Publisher(service.name, cfg)
        self.subscriber = Subscriber(service.streams_in, cfg) if service.streams_in else None
        self.poller = zmq.Poller()
        self.poller.register(self.server.socket, zmq.POLLIN)
        if self.subscriber:
            self.poller.register(self.subscriber.socket, zmq.POLLIN)
        self.callbacks: dict[zmq.Socket, Callable[[], None]] = {}
        if service.publisher:
            self.callbacks[service.publisher.socket] = service.publisher.read_subscriptions
        self.callbacks.update(dict(service.extra_sockets()))
        for sock in self.callbacks:
            self.poller.register(sock, zmq.POLLIN)
        self.stopping = False

    def stop(self, signum: int = 0, frame: object = None) -> None:
        self.stopping = True

    def run(self) -> None:
        if self.subscriber is None and not self.callbacks:
            self._run_server_only()
            return
        svc = self.service
        next_tick = time.monotonic()
        while not self.stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            # Cap the wait so a SIGTERM is acted on within 100 ms.
            events = dict(self.poller.poll(min(timeout, 0.1) * 1000))
            if self.server.socket in events:
                self.server.serve_one(svc.handle)
            if self.subscriber and self.subscriber.socket in events:
                msg = self.subscriber.receive()
                if msg is not None:
                    try:
                        svc.on_stream(msg)
                    except Exception as exc:
                        self._failed(f"handling a {msg.stream} message", exc)
            for sock, callback in self.callbacks.items():
                if sock in events:
                    try:
                        callback()
                    except Exception as exc:
                        self._failed("a socket callback", exc)
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + svc.tick_interval_s
            self._flush_logs()

    def _flush_logs(self) -> None:
        """Refusals and drops held back whose interval is over get their summary line."""
        self.server.flush()
        self.service.throttle.flush()
        if self.subscriber:
            self.subscriber.flush()

    def _tick(self) -> None:
        try:
            self.service.tick()
        except Exception as exc:
            self._failed("periodic work", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        """A step that raised, with its traceback; the same failure again within the interval
        is only counted (a bug hit by every message, or every tick, is not a log flood)."""
        name = type(exc).__name__
        self.service.throttle.event((what, name), f"{what} failed", head=f"{what} failed",
                                    noun="times", detail=clip(f"{name}: {exc}"), kind=name,
                                    level=logging.ERROR, exc_info=True)

    def _run_server_only(self) -> None:
        """One socket to serve: block in recv (RCVTIMEO bounds the wait, so ticks and SIGTERM
        are still seen within 100 ms) instead of a zmq_poll per request — ~10 µs a request."""
        svc, sock = self.service, self.server.socket
        sock.setsockopt(zmq.RCVTIMEO, int(min(svc.tick_interval_s, 0.1) * 1000))
        next_tick = time.monotonic()
        while not self.stopping:
            self.server.serve_one(svc.handle)
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + svc.tick_interval_s
            self.server.flush()

    def close(self) -> None:
        self.service.close()
        if self.subscriber:
            self.subscriber.close()
        if self.service.publisher:
            self.service.publisher.close()
        self.server.close()


def run(service_cls: type[Service], cfg: Config | None = None) -> None:
    """Entry point of every service process (``python -m services.NAME``)."""
    log = setup_logging(service_cls.name)          # first: every line goes through it
    try:
        cfg = cfg or load_config()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        raise SystemExit(2) from None
    logging.getLogger().setLevel(cfg.get("log.level"))
    try:
        lock = hold_instance_lock(cfg, service_cls.name)   # before any file or socket is touched
    except InstanceLocked as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    try:
        service = service_cls(cfg)
    except ConfigError as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    runner = Runner(service)
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    # What start-up loaded (libraries, models, windows) is permanent: keep it out of the
    # collector's sight, so a full collection never walks it mid-request (a 45-60 ms pause).
    gc.collect()
    gc.freeze()
    log.info("started pid=%d listening on %s", os.getpid(), runner.server.endpoint)
    try:
        runner.run()
    finally:
        runner.close()
        log.info("stopped")
        release_instance_lock(cfg, service_cls.name, lock)
