"""Bus round trip over ipc: BusClient.call -> BusServer (shared.service.Runner) vs bare REQ/REP.

Both servers are child processes of this one (``python -m bench.bus serve bus|raw``); every
process, and every thread in it (zmq I/O threads included), is pinned to CPU 0.
"""

from __future__ import annotations

import os
import signal
import sys
import timeit
from pathlib import Path
from typing import Any

import zmq

from bench import common
from shared import codec
from shared.bus import BusClient, wait_for
from shared.config import load_config
from shared.service import Service, run

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


def bench(quick: bool = False) -> dict[str, Any]:
    n, warmup = (2_000, 200) if quick else (20_000, 1_000)
    results: dict[str, Any] = {"meta": common.metadata(quick), "payload_bytes": len(PAYLOAD),
                               "request_bytes": len(codec.request("echo", ARGS)),
                               "pinned_cpu": CPU, "requests": n, "warmup": warmup}
    pinning: dict[str, list[str]] = {}
    with common.var_dir() as var, common.pinned({CPU}):
        cfg = load_config({"BDT_VAR": str(var)})
        env = common.bdt_env(var)
        ctx = zmq.Context()  # made after pinning: its I/O thread is pinned too
        try:
            with common.child(common.python_module("bench.bus", "serve", "raw"),
                              var / "log" / "raw.log", env) as proc:
                sock = ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVTIMEO, 5000)  # a dead server fails the run, not hangs
                sock.connect(f"ipc://{cfg.run_dir / RAW_SOCK}")
                try:
                    def raw() -> bytes:
                        sock.send(PAYLOAD)
                        return sock.recv()

                    assert raw() == PAYLOAD
                    results["raw"] = common.time_calls(raw, n, warmup)
                    pinning["raw_server"] = sorted(common.thread_cpus(proc.pid))
                finally:
                    sock.close()
            with common.child(common.python_module("bench.bus", "serve", "bus"),
                              var / "log" / "bus.log", env) as proc:
                wait_for(EchoService.name, cfg)
                client = BusClient(EchoService.name, cfg, ctx=ctx)
                try:
                    def bus() -> Any:
                        return client.call("echo", **ARGS)

                    assert bus() == ARGS
                    results["bus"] = common.time_calls(bus, n, warmup)
                    pinning["bus_server"] = sorted(common.thread_cpus(proc.pid))
                finally:
                    client.close()
            pinning["client"] = sorted(common.thread_cpus(os.getpid()))
        finally:
            ctx.term()
    results["thread_affinity"] = pinning
    results.update(codec_cost_us(n))
    raw_r, bus_r = results["raw"], results["bus"]
    results["overhead_p50_pct"] = (bus_r["p50_us"] / raw_r["p50_us"] - 1) * 100
    results["overhead_rps_pct"] = (raw_r["per_s"] / bus_r["per_s"] - 1) * 100
    report(results)
    return results


def report(r: dict[str, Any]) -> None:
    rows = [[label, r[key]["p50_us"], r[key]["p99_us"], r[key]["mean_us"], r[key]["per_s"]]
            for label, key in (("raw pyzmq REQ/REP", "raw"), ("bus BusClient.call", "bus"))]
    common.print_table(
        f"bus round trip over ipc: {r['payload_bytes']}-byte msgpack payload "
        f"({r['request_bytes']} bytes in the bus envelope), {r['requests']:,} requests "
        f"after {r['warmup']:,} warm-up",
        ["path", "p50 µs", "p99 µs", "mean µs", "requests/s"], rows)
    print(f"  client and server pinned to CPU {r['pinned_cpu']} (os.sched_setaffinity in each "
          f"process); thread affinity seen: {r['thread_affinity']}")
    print(f"  Python work of the bus per request, no I/O: client codec "
          f"{r['client_codec_us']:.1f} µs, server codec + dispatch "
          f"{r['server_codec_dispatch_us']:.1f} µs")
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
