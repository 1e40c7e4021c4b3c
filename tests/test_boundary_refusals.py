"""Issue 24 case 6 (refusals): repeated refusals from one peer are one line per interval.

On the running system 16,579 malformed messages made 992 identical warning lines per service.
Now the first refusal from a peer is logged in full at once, those that follow within the
interval (10 s) are counted, and one line says how many, of which kinds, and the last one.
"""

from __future__ import annotations

import logging
import os
import re

import msgpack
import zmq

from shared.bus import codec
from shared.bus.client import BusClient, wait_for
from shared.logs import Throttle
from tests.helpers import bars_subscribed, start_module, stop_process, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(throttle: Throttle, who: str, kind: str, text: str) -> None:
    throttle.event(("refused", who), f"cache: refused {text} from {who}", head="cache: refused",
                   noun="requests", who=who, detail=text, kind=kind)


def test_throttle_one_line_then_a_count_per_interval(caplog):
    clock = Clock()
    log = logging.getLogger("bdt.test.throttle")
    throttle = Throttle(log, 10.0, max_keys=3, clock=clock)
    with caplog.at_level(logging.WARNING, "bdt.test.throttle"):
        for i in range(993):                               # in 9.9 s, as fast as they come
            clock.now = 1000.0 + i * 0.01
            refusal(throttle, "pid 7", "unknown_op" if i in (5, 9) else "bad_message",
                    f"a request: bad_message: not msgpack #{i}")
        assert [r.getMessage() for r in caplog.records] == [
            "cache: refused a request: bad_message: not msgpack #0 from pid 7"]
        clock.now = 1010.0
        throttle.flush()
        assert caplog.records[-1].getMessage() == (
            "cache: refused 992 more requests from pid 7 in the last 10 s (bad_message 990, "
            "unknown_op 2); last: a request: bad_message: not msgpack #992")
        # the flood goes on: one line an interval, never the full line again
        for i in range(50):
            clock.now = 1010.5 + i * 0.1
            refusal(throttle, "pid 7", "bad_message", f"#{i}")
        clock.now = 1021.0
        throttle.flush()
        assert len(caplog.records) == 3
        assert caplog.records[-1].getMessage().startswith(
            "cache: refused 50 more requests from pid 7 in the last 11 s (bad_message 50)")
        # a quiet interval closes the window: the next refusal is shown in full again
        clock.now = 1032.0
        throttle.flush()
        refusal(throttle, "pid 7", "bad_args", "a get request: bad_args: …")
        assert caplog.records[-1].getMessage() == \
            "cache: refused a get request: bad_args: … from pid 7"
        # many peers at once: past max_keys they share one line
        caplog.clear()
        for pid in range(8, 20):
            refusal(throttle, f"pid {pid}", "bad_message", f"from {pid}")
        assert [r.getMessage() for r in caplog.records] == [
            "cache: refused from 8 from pid 8", "cache: refused from 9 from pid 9",
            "cache: refused from 10 from pid 10"]
        clock.now = 1043.0
        throttle.flush()
        assert caplog.records[-1].getMessage() == ("cache: refused 9 more requests from other "
                                                   "peers in the last 11 s (bad_message 9); "
                                                   "last: from 19")


def test_a_flood_of_malformed_requests_is_two_lines_in_the_services_log(cfg, var_dir):
    """2000 garbage messages and 3 unknown ops from one peer: one line at once naming the
    peer (this test's pid), then within the interval one count of all the rest."""
    proc = start_module("services.cache", var_dir)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        wait_for("cache", cfg)
        sock.connect(f"ipc://{cfg.run_dir / 'cache.sock'}")
        payloads = [b"\xc1 garbage %d" % i for i in range(2000)]
        payloads += [codec.request("launch\x1b_missiles") for _ in range(3)]
        for payload in payloads:
            sock.send_multipart([b"", payload])
            assert sock.poll(5000)
            reply = msgpack.unpackb(sock.recv_multipart()[-1])
            assert reply["ok"] is False
        with BusClient("cache", cfg) as client:
            assert client.call("ping")["pong"] is True     # still serving
        log = var_dir / "services_cache.log"

        def refusals() -> list[str]:
            return [line for line in log.read_text().splitlines() if "refused" in line]

        wait_until(lambda: len(refusals()) > 2 or "more requests" in log.read_text(),
                   timeout=15, what="the summary line")
        assert len(refusals()) == 2, f"{len(refusals())} lines for {len(payloads)} refusals"
        first, summary = refusals()
        pid = os.getpid()
        assert first.endswith(f"WARNING cache bdt.bus: cache: refused a request: bad_message: "
                              f"not msgpack: FormatError:  from "
                              f"pid {pid}")
        assert re.search(rf"cache: refused 2002 more requests from pid {pid} in the last "
                         r"1\d s \(bad_message 1999, unknown_op 3\); last: a "
                         r"launch\\x1b_missiles request: unknown_op: cache has no op ", summary)
    finally:
        sock.close()
        assert stop_process(proc) == 0
    assert len(refusals()) == 2


def test_malformed_stream_messages_are_one_line_per_publisher_and_interval(cfg, caplog):
    with bars_subscribed(cfg) as (pub, sub), caplog.at_level(logging.WARNING, "bdt.bus"):
        for i in range(300):
            pub.socket.send_multipart([b"bars", b"\xc1 not msgpack %d" % i])
        pub.publish("bars", {"ok": True})
        got = [sub.receive(timeout_ms=1000) for _ in range(301)]
        assert got[:300] == [None] * 300 and got[300].fields["ok"] is True
        assert len(caplog.records) == 1
        assert caplog.records[0].getMessage().startswith(
            "dropped a malformed bars message: bad_message: not msgpack")
        sub.throttle.flush(sub.throttle.clock() + 10)
        assert len(caplog.records) == 2
        assert re.match(r"dropped 299 more stream messages from pid \d+ in the last 1\d s "
                        r"\(bad_message 299\); last: a malformed bars message",
                        caplog.records[1].getMessage())


def test_a_service_counts_the_messages_it_ignores(cfg, caplog):
    """``Service.ignored``: what a service's own checks refuse (a rejected bar, an event it
    cannot parse) is one line per kind and interval too."""
    from shared.bus.service import Service

    class Svc(Service):
        name = "history"

    svc = Svc(cfg)
    clock = Clock()
    svc.throttle.clock = clock
    with caplog.at_level(logging.WARNING, "bdt.history"):
        for i in range(40):
            svc.ignored("malformed bar messages", f"dropped a malformed bar message: 'ts' #{i}")
        clock.now += 10
        svc.throttle.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "dropped a malformed bar message: 'ts' #0",
        "ignored 39 more malformed bar messages in the last 10 s; last: dropped a malformed "
        "bar message: 'ts' #39"]


def test_a_step_failing_again_and_again_is_one_traceback_then_a_count(cfg, caplog):
    """Periodic work (or a stream handler) that raises on every tick (every message): the
    first failure with its traceback, the rest counted — not a traceback a second."""
    from shared.bus.service import Runner, Service

    class Broken(Service):
        name = "history"

        def tick(self) -> None:
            raise ValueError("no such table: bars\x1b")

    runner = Runner(Broken(cfg))
    clock = Clock()
    runner.service.throttle.clock = clock
    try:
        with caplog.at_level(logging.ERROR, "bdt.history"):
            for _ in range(30):
                runner._tick()
            clock.now += 10
            runner._flush_logs()
    finally:
        runner.close()
    assert [r.getMessage() for r in caplog.records] == [
        "periodic work failed",
        "periodic work failed 29 more times in the last 10 s (ValueError 29); last: "
        "ValueError: no such table: bars\x1b"]
    assert caplog.records[0].exc_info is not None and caplog.records[1].exc_info is None
