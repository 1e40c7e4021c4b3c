"""Bus round trip over ipc: BusClient.call -> BusServer (shared.service.Runner) vs bare REQ/REP.

Both servers are child processes of this one (``python -m bench.bus serve bus|raw``); every
process, and every thread in it (zmq I/O threads included), is pinned to CPU 0.
"""

from __future__ import annotations

import os
import signal
import sys
import timeit
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import zmq

from bench import common
from shared.bus import codec
from shared.bus.client import BusClient, wait_for
from shared.bus.endpoints import endpoint
from shared.bus.service import Service, run
from shared.config import load_config
from shared.protocol.common import table
from shared.protocol.ops import Arg, Op

CPU = 0
# ~100 bytes once msgpack-packed: the size of a typical order/price request.
ARGS: dict[str, Any] = {
    "symbol": "BTC/USDT", "side": "buy", "qty": 0.25, "price": 64123.5, "ts": 1700000000123,
    "client_id": "bench-0001", "note": "x" * 7,
}
PAYLOAD = codec.pack(ARGS)
RAW_SOCK = "raw.sock"
TARGET_OVERHEAD_PCT = 20.0


class EchoService(Service):
    # endpoint() knows only the names in shared.bus.SERVICES; the socket is in the bench's own
    # temporary var dir, so it never meets a running stack's "backtest".
    name = "backtest"
    summary = "bench: echoes its args"
    ops = table("backtest", Op("echo", "bench: echoes its args",
                               tuple(Arg(k, type(v), k) for k, v in ARGS.items()),
                               "the args", internal="bench/bus.py"))

    def op_echo(self, args: dict[str, Any]) -> dict[str, Any]:
        return args


def _serve_raw(run_dir: Path) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"ipc://{run_dir / RAW_SOCK}")
    try:
        while True:
            sock.send(sock.recv())
    finally:
        sock.close()
        ctx.term()


def serve(kind: str) -> None:
    """Child process entry: pin first, so the zmq I/O threads started later inherit it."""
    os.sched_setaffinity(0, {CPU})
    if kind == "bus":
        run(EchoService)
    else:
        _serve_raw(load_config().run_dir)


def codec_cost_us(n: int = 20_000) -> dict[str, float]:
    """The bus's Python work per request with no I/O: envelope and dispatch, per side."""
    svc = EchoService(load_config({"BDT_VAR": "/nonexistent"}))
    req, rep = codec.request("echo", ARGS), codec.reply_ok(ARGS)

    def client_side() -> None:
        codec.request("echo", ARGS)
        codec.parse_reply(rep)

    def server_side() -> None:
        op, args = codec.parse_request(req)
        codec.reply_ok(svc.handle(op, args))

    return {
        "client_codec_us": min(timeit.repeat(client_side, number=n, repeat=3)) / n * 1e6,
        "server_codec_dispatch_us": min(timeit.repeat(server_side, number=n, repeat=3)) / n * 1e6,
    }


def _req_socket(ctx: zmq.Context, ep: str) -> zmq.Socket:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)  # a dead server fails the run instead of hanging it
    sock.connect(ep)
    return sock


def _plain(sock: zmq.Socket, payload: bytes) -> Callable[[], bytes]:
    def round_trip() -> bytes:
        sock.send(payload)
        return sock.recv()

    return round_trip


def bench(quick: bool = False) -> dict[str, Any]:
    n, warmup = (2_000, 200) if quick else (20_000, 1_000)
    request = codec.request("echo", ARGS)
    r: dict[str, Any] = {"meta": common.metadata(quick), "payload_bytes": len(PAYLOAD),
                         "request_bytes": len(request), "pinned_cpu": CPU, "requests": n,
                         "warmup": warmup}
    with common.var_dir() as var, common.pinned({CPU}), ExitStack() as stack:
        cfg = load_config({"BDT_VAR": str(var)})
        ctx = zmq.Context()  # made after pinning: its I/O thread is pinned too
        stack.callback(ctx.term)
        servers = {kind: stack.enter_context(common.child(
            common.python_module("bench.bus", "serve", kind), var / "log" / f"{kind}.log",
            common.bdt_env(var))) for kind in ("raw", "bus")}
        wait_for(EchoService.name, cfg)
        raw_sock = _req_socket(ctx, f"ipc://{cfg.run_dir / RAW_SOCK}")
        stack.callback(raw_sock.close)
        bus_sock = _req_socket(ctx, endpoint(cfg, EchoService.name))
        stack.callback(bus_sock.close)
        client = BusClient(EchoService.name, cfg, ctx=ctx)
        stack.callback(client.close)
        raw, plain = _plain(raw_sock, PAYLOAD), _plain(bus_sock, request)
        assert raw() == PAYLOAD and codec.parse_reply(plain())["result"] == ARGS
        assert client.call("echo", **ARGS) == ARGS
        me = os.getpid()
        r.update(common.time_interleaved({
            "raw": (raw, {"client": me, "server": servers["raw"].pid}),
            "req_to_bus": (plain, {"client": me, "server": servers["bus"].pid}),
            "bus": (lambda: client.call("echo", **ARGS),
                    {"client": me, "server": servers["bus"].pid}),
        }, n, warmup))
        r["thread_affinity"] = {name: sorted(common.thread_cpus(pid)) for name, pid in
                                (("client", me), *((k, p.pid) for k, p in servers.items()))}
    r.update(codec_cost_us(n))
    r["overhead_p50_pct"] = (r["bus"]["p50_us"] / r["raw"]["p50_us"] - 1) * 100
    r["overhead_rps_pct"] = (r["raw"]["per_s"] / r["bus"]["per_s"] - 1) * 100
    report(r)
    return r


def report(r: dict[str, Any]) -> None:
    paths = (("raw pyzmq REQ -> REP", "raw"), ("plain REQ -> BusServer (Runner)", "req_to_bus"),
             ("BusClient.call -> BusServer", "bus"))
    rows = [[label, r[k]["p50_us"], r[k]["p99_us"], r[k]["mean_us"], r[k]["per_s"],
             r[k]["cpu_us_per_call"]["client"], r[k]["cpu_us_per_call"]["server"]]
            for label, k in paths]
    common.print_table(
        f"bus round trip over ipc: {r['payload_bytes']}-byte msgpack payload "
        f"({r['request_bytes']} bytes in the bus envelope), {r['requests']:,} requests "
        f"after {r['warmup']:,} warm-up, in 5 alternating blocks",
        ["path", "p50 µs", "p99 µs", "mean µs", "requests/s", "client CPU µs", "server CPU µs"],
        rows)
    print(f"  client and server pinned to CPU {r['pinned_cpu']} (os.sched_setaffinity in each "
          f"process); threads' Cpus_allowed_list: {r['thread_affinity']}")
    print("  CPU µs = user + system time of that process (all threads) per request")
    common.foreign_load((r[k] for k in ("raw", "req_to_bus", "bus")), r["meta"]["quick"])
    print(f"  Python work of the bus per request, no I/O: client codec "
          f"{r['client_codec_us']:.1f} µs, server codec + dispatch "
          f"{r['server_codec_dispatch_us']:.1f} µs (warm loop)")
    raw, mid, bus = (r[k]["p50_us"] for k in ("raw", "req_to_bus", "bus"))
    print(f"  p50 added by the server side (BusServer + Runner + codec): {mid - raw:+.1f} µs; "
          f"by the client side (BusClient): {bus - mid:+.1f} µs")
    print(f"  overhead of the bus over raw pyzmq: {r['overhead_p50_pct']:+.1f}% at p50, "
          f"{r['overhead_rps_pct']:+.1f}% in requests/s")
    r["verdict"] = common.verdict(
        r["overhead_p50_pct"] <= TARGET_OVERHEAD_PCT,
        f"bus overhead ≤ {TARGET_OVERHEAD_PCT:.0f}% at p50 "
        f"(measured {r['overhead_p50_pct']:+.1f}%)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 3:
        serve(sys.argv[2])
    else:
        sys.exit("usage: python -m bench.bus serve bus|raw  (the benchmark: python -m bench bus)")
