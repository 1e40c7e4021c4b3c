"""Issue 24 case 6 (results): a result msgpack cannot carry is ``bad_args`` naming it.

On the running system ``incr`` on 18446744073709551615 answered ``internal`` with a traceback
in the log (the cache's store packed the sum itself). Now the store refuses the sum naming it,
and every server checks every op's result against what msgpack carries before sending it: the
reply is ``bad_args`` naming the value and where it is — never ``internal``.
"""

from __future__ import annotations

import datetime
import logging
import re

import msgpack
import numpy as np
import pytest
import zmq

from services.cache.store import CacheLimitError, CacheStore, CacheTypeError
from shared.bus import codec
from shared.bus.cache_client import CacheClient
from shared.bus.client import BusClient, wait_for
from shared.bus.server import BusServer
from shared.protocol import errors
from tests.helpers import start_module, stop_process

U64 = 2**64 - 1


def wire(cfg, op: str, **args) -> dict:
    """One request from a DEALER, the reply as it came (no client-side interpretation)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{cfg.run_dir / 'cache.sock'}")
    try:
        sock.send_multipart([b"", codec.request(op, args)])
        assert sock.poll(5000), f"no reply to {op}"
        return msgpack.unpackb(sock.recv_multipart()[-1])
    finally:
        sock.close()


@pytest.fixture
def cache(cfg, var_dir):
    proc = start_module("services.cache", var_dir)
    wait_for("cache", cfg)
    yield proc
    assert stop_process(proc) == 0


def test_incr_past_the_largest_integer_is_bad_args_naming_the_sum(cfg, var_dir, cache):
    client = CacheClient(cfg)
    client.set("n", U64)
    reply = wire(cfg, "incr", key="n")
    assert reply["ok"] is False and reply["error"]["code"] == errors.BAD_ARGS
    assert "18446744073709551616" in reply["error"]["message"]
    assert reply["error"]["message"] == (
        "incr on 'n': 18446744073709551615 + 1 = 18446744073709551616 is outside msgpack's "
        "range (-2**63 … 2**64-1); 'n' is unchanged")
    client.set("m", -(2**63))
    low = wire(cfg, "incr", key="m", by=-1)
    assert low["error"]["code"] == errors.BAD_ARGS and "-9223372036854775809" in \
        low["error"]["message"]
    # a value that is not msgpack at all (a raw set) is not an integer: bad_args too
    with BusClient("cache", cfg) as raw:
        raw.call("set", key="raw", value=b"\xc1")
    garbage = wire(cfg, "incr", key="raw")
    assert garbage["error"] == {"code": errors.BAD_ARGS,
                                "message": "incr on 'raw': value is not an integer"}
    # the cache keeps serving, the values unchanged
    assert client.get("n") == U64 and client.get("m") == -(2**63)
    assert client.incr("n", -1) == U64 - 1 and client.incr("fresh") == 1
    assert cache.poll() is None
    client.close()
    log = (var_dir / "services_cache.log").read_text()
    assert "Traceback" not in log and " ERROR " not in log


def test_the_store_refuses_a_sum_it_cannot_store():
    store = CacheStore(max_bytes=1 << 20, max_items=100)
    store.set("n", msgpack.packb(U64))
    with pytest.raises(CacheLimitError, match="= 18446744073709551616 is outside"):
        store.incr("n")
    assert msgpack.unpackb(store.get("n")) == U64
    store.set("g", b"\x92\x01")                              # truncated msgpack
    with pytest.raises(CacheTypeError, match="not an integer"):
        store.incr("g")


@pytest.mark.parametrize(("result", "named"), [
    (2**64, "result: the integer 18446744073709551616 is outside msgpack's range"),
    ({"rows": [{"qty": 1}, {"qty": -(2**63) - 1}]},
     "result['rows'][1]['qty']: the integer -9223372036854775809 is outside"),
    ({2**70: "x"}, "result key 1180591620717411303424: the integer 1180591620717411303424"),
    ({"n": np.int64(3)}, "result['n']: a numpy.int64 (np.int64(3)) cannot be sent"),
    ({"when": datetime.date(2024, 1, 2)}, "result['when']: a datetime.date "),
    ({"tags": {"a"}}, "result['tags']: a builtins.set ({'a'}) cannot be sent"),
    (["file-\udcff.json"], "result[0]: 'file-\\udcff.json' is not Unicode text"),
])
def test_reply_names_the_value_msgpack_cannot_carry(result, named):
    with pytest.raises(errors.MessageError, match="^" + re.escape(named)) as caught:
        codec.reply_ok(result)
    assert caught.value.code == errors.BAD_ARGS


def test_unpackable_names_nesting_and_keys_no_reader_could_decode():
    deep: list = []
    inner = deep
    for _ in range(600):
        inner.append([])
        inner = inner[0]
    assert "nested more than 511 levels deep" in codec.unpackable(deep, "result")
    assert codec.unpackable({(1, 2): 3}, "result") == \
        "result: the map key (1, 2) is a tuple; a key must be a string, a number or bytes"
    assert codec.unpackable({"ok": [1, 2.5, None, b"x", "é", True, U64, -(2**63)]}) is None


def test_a_server_answers_bad_args_for_any_op_whose_result_it_cannot_send(cfg, caplog):
    """The whole kind, for every service: the check is the server's, not each op's."""
    server = BusServer("cache", cfg)
    client = zmq.Context.instance().socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(server.endpoint)
    results = {"big": {"x": [1, 2**64]}, "numpy": np.float32(1.5), "fine": {"x": 1}}
    try:
        replies = {}
        for op in results:
            client.send_multipart([b"", codec.request(op)])
            with caplog.at_level(logging.WARNING, "bdt.bus"):
                assert server.serve_one(lambda name, args: results[name])
            replies[op] = msgpack.unpackb(client.recv_multipart()[-1])
    finally:
        client.close()
        server.close()
    assert replies["big"]["error"] == {
        "code": "bad_args", "message": "result['x'][1]: the integer 18446744073709551616 is "
                                       "outside msgpack's range (-2**63 … 2**64-1)"}
    assert replies["numpy"]["error"]["code"] == "bad_args"
    assert "result: a numpy.float32 (np.float32(1.5))" in replies["numpy"]["error"]["message"]
    assert replies["fine"] == {"v": 1, "type": "reply", "ok": True, "result": {"x": 1}}
    assert "internal" not in caplog.text and "Traceback" not in caplog.text
