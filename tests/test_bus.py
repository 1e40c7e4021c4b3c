"""The bus over real sockets, with the cache service as a real server process."""

import os
import socket
import threading
import time

import msgpack
import pytest
import zmq

from shared.bus import codec
from shared.bus.client import (
    BadRequest,
    BusClient,
    RemoteError,
    RequestTimeout,
    ServiceUnavailable,
    wait_for,
)
from shared.bus.endpoints import generate_curve_keys
from shared.bus.streams import Publisher, Subscriber
from shared.config import load_config
from shared.protocol import errors
from tests.helpers import bars_subscribed, start_module, stop_process, wait_until


@pytest.fixture
def cache_proc(cfg, var_dir):
    proc = start_module("services.cache", var_dir)
    wait_for("cache", cfg)
    yield proc
    stop_process(proc)


def raw_request(cfg, frames: list[bytes], timeout_ms: int = 1000) -> bytes | None:
    """Send arbitrary frames from a DEALER (as a misbehaving peer would) and read one reply."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{cfg.run_dir / 'cache.sock'}")
    try:
        sock.send_multipart(frames)
        if sock.poll(timeout_ms):
            return sock.recv_multipart()[-1]
        return None
    finally:
        sock.close()


def test_round_trip(cfg, cache_proc):
    with BusClient("cache", cfg) as client:
        assert client.call("ping")["pid"] == cache_proc.pid
        status = client.call("status")
        assert status["service"] == "cache" and "get" in status["ops"]


def test_server_down_raises_unavailable_within_timeout(cfg):
    client = BusClient("cache", cfg, timeout_ms=200, retries=1)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=r"cache\.ping: service unavailable"):
        client.call("ping")
    assert time.monotonic() - started < 0.2 * 2 + 0.5


def test_same_client_recovers_after_restart(cfg, var_dir):
    proc = start_module("services.cache", var_dir)
    wait_for("cache", cfg)
    client = BusClient("cache", cfg, timeout_ms=300, retries=1)
    assert client.call("ping")["pid"] == proc.pid
    assert stop_process(proc) == 0
    with pytest.raises((ServiceUnavailable, RequestTimeout)):
        client.call("ping")
    proc2 = start_module("services.cache", var_dir)
    try:
        wait_until(lambda: _ping_ok(client), what="the restarted cache to answer the old client")
        assert client.call("ping")["pid"] == proc2.pid
    finally:
        stop_process(proc2)
        client.close()


def _ping_ok(client):
    try:
        client.call("ping")
        return True
    except (ServiceUnavailable, RequestTimeout):
        return False


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xc1\xff garbage", errors.BAD_MESSAGE),                         # not msgpack
        (msgpack.packb([1, 2, 3]), errors.BAD_MESSAGE),                    # not a map
        (msgpack.packb({"v": 99, "type": "request", "op": "ping"}), errors.BAD_VERSION),
        (msgpack.packb({"v": 1, "type": "request", "op": 7}), errors.BAD_MESSAGE),
        (msgpack.packb({"v": 1, "type": "request", "op": "get", "args": [1]}), errors.BAD_ARGS),
        (msgpack.packb({"v": 1, "type": "request", "op": "get", "args": {"key": 5}}),
         errors.BAD_ARGS),
        (msgpack.packb({"v": 1, "type": "request", "op": "launch_missiles"}), errors.UNKNOWN_OP),
    ],
)
def test_bad_input_gets_an_error_reply_and_the_server_keeps_serving(cfg, cache_proc, payload,
                                                                    code):
    reply = raw_request(cfg, [b"", payload])
    assert reply is not None
    msg = msgpack.unpackb(reply)
    assert msg["ok"] is False and msg["error"]["code"] == code and msg["error"]["message"]
    with BusClient("cache", cfg) as client:
        assert client.call("ping")["pong"] is True
    assert cache_proc.poll() is None


def test_oversize_message_is_dropped_and_server_keeps_serving(cfg, cache_proc):
    big = codec.request("set", {"key": "k", "value": b"x" * (2 << 20)})
    assert raw_request(cfg, [b"", big], timeout_ms=500) is None   # MAXMSGSIZE: dropped
    with BusClient("cache", cfg) as client:
        with pytest.raises(BadRequest, match="over bus.max_message_bytes"):
            client.call("set", key="k", value=b"x" * (2 << 20))  # refused before sending
        assert client.call("ping")["pong"] is True
    assert cache_proc.poll() is None


def test_typed_errors_name_service_and_op(cfg, cache_proc):
    with BusClient("cache", cfg) as client:
        with pytest.raises(BadRequest, match=r"cache\.nope: unknown_op"):
            client.call("nope")
        client.call("set", key="s", value=msgpack.packb("text"))
        with pytest.raises(BadRequest, match=r"cache\.incr: bad_args: incr on 's'"):
            client.call("incr", key="s")
    assert issubclass(RemoteError, Exception)


def test_sigterm_exits_zero_quickly_and_removes_the_socket(cfg, var_dir):
    proc = start_module("services.cache", var_dir)
    wait_for("cache", cfg)
    sock_path = cfg.run_dir / "cache.sock"
    assert sock_path.exists()
    started = time.monotonic()
    assert stop_process(proc) == 0
    assert time.monotonic() - started < 2.0   # stopwaitsecs is 10
    assert not sock_path.exists()


def test_run_dir_is_private(cfg, cache_proc):
    assert (os.stat(cfg.run_dir).st_mode & 0o777) == 0o700


def test_pubsub_topics_and_slow_subscriber_never_blocks(cfg):
    ctx = zmq.Context.instance()
    pub = Publisher("bot", cfg, ctx)
    sub = Subscriber(["bars"], cfg, ctx)
    other = Subscriber(["events"], cfg, ctx)
    try:
        def delivered():
            pub.publish("bars", {"seq": -1})
            return sub.receive(timeout_ms=50)
        wait_until(delivered, what="subscription to propagate")
        pub.publish("events", {"kind": "mode", "mode": "normal"})
        pub.publish("bars", {"seq": 0, "close": 1.5})
        while (msg := sub.receive(timeout_ms=500)) and msg.fields["seq"] == -1:
            pass
        assert msg.stream == "bars" and msg.fields["close"] == 1.5
        assert pub.subscribers("bars") == 1 and pub.subscribers("events") == 1
        # `other` never reads: 200k messages go out without the publisher blocking.
        done = threading.Event()

        def flood():
            for i in range(200_000):
                pub.publish("events", {"i": i})
            done.set()

        thread = threading.Thread(target=flood)
        thread.start()
        thread.join(60)
        assert done.is_set(), "publisher blocked on a slow subscriber"
        received = 0
        while other.receive(timeout_ms=200) is not None:
            received += 1
        assert received < 200_000        # the slow one dropped past its high-water mark
        sub.close()
        wait_until(lambda: pub.subscribers("bars") == 0, what="the unsubscription to arrive")
    finally:
        for s in (pub, sub, other):
            s.close()


def test_subscriber_drops_malformed_stream_messages(cfg):
    with bars_subscribed(cfg) as (pub, sub):
        pub.socket.send_multipart([b"bars", b"\xc1 not msgpack"])
        pub.socket.send_multipart([b"bars", msgpack.packb({"v": 1, "type": "events"})])
        pub.publish("bars", {"ok": True})
        results = [sub.receive(timeout_ms=500) for _ in range(3)]
        assert results[0] is None and results[1] is None
        assert results[2].fields["ok"] is True


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 60000:
            return port
    raise RuntimeError("no free port")


def test_tcp_is_curve_encrypted(var_dir, tmp_path):
    keys = tmp_path / "keys"
    generate_curve_keys(keys)
    base = _free_port_pair()
    env = {"BDT_BUS__TRANSPORT": "tcp", "BDT_BUS__TCP_BASE_PORT": str(base),
           "BDT_BUS__CURVE_KEYS_DIR": str(keys)}
    cfg = load_config({"BDT_VAR": str(var_dir), **env})
    proc = start_module("services.cache", var_dir, **env)
    try:
        assert wait_for("cache", cfg)["pid"] == proc.pid
        # A plain-text peer gets nothing out of the CURVE server.
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{base}")
        sock.send(codec.request("ping"))
        assert sock.poll(500) == 0
        sock.close()
    finally:
        stop_process(proc)
    with pytest.raises(Exception, match="curve_keys_dir: required"):
        BusClient("cache", load_config({"BDT_VAR": str(var_dir), "BDT_BUS__TRANSPORT": "tcp"}))\
            .call("ping")


def test_a_busy_tcp_port_is_bound_again_with_backoff_not_given_up():
    """Issue 24 item 4, the bus's listeners: a tcp endpoint whose port is held at start
    made the service exit (under supervisord: FATAL after its retries, never back)."""
    import socket

    import zmq

    from shared.bus.endpoints import _bind_retrying

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    pauses: list[float] = []

    def sleep(s: float) -> None:
        pauses.append(s)
        if len(pauses) == 3:
            holder.close()                          # the port is freed after three tries

    try:
        attempts = _bind_retrying(sock, f"tcp://127.0.0.1:{port}", sleep=sleep)
        assert attempts == 4 and pauses == [0.5, 1.0, 2.0]
    finally:
        sock.close(linger=0)
        holder.close()
