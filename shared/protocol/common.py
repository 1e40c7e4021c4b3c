"""The ops every service answers."""

from __future__ import annotations

from shared.protocol.ops import Arg, Op

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
