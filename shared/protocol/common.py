"""The ops every service answers (ping, status, latency), and ``table``, which makes a
service's op table with them."""

from __future__ import annotations

from shared.protocol.ops import Arg, Op, OpTable

PING = Op("ping", "one round trip; proves the service answers", reply="{pong, service, pid}",
          verb="ping")
STATUS = Op("status", "what the service is doing: pid, uptime, RSS, its ops and its own figures",
            reply="{service, summary, pid, uptime_s, rss_bytes, ops, ...}",
            internal="bdt status and bdt bot status read it; every service answers it")
LATENCY = Op("latency", "p50/p99/max (µs) of each of the service's timings",
             args=(Arg("last", int, "only the newest N samples of each timing", 5000,
                       minimum=1),),
             reply="{timing: {p50_us, p99_us, max_us, n}}", verb="latency")

COMMON = (PING, STATUS, LATENCY)


def table(service: str, *ops: Op) -> OpTable:
    """A service's table: ``ops`` plus the ops every service answers (ping, status, latency)."""
    by_name: dict[str, Op] = {}
    for op in (*COMMON, *ops):
        if op.name in by_name:
            raise ValueError(f"{service}: op {op.name} declared twice")
        by_name[op.name] = op
    return OpTable(service, by_name)
