"""The monitor's ops: the resource mode, the latest sample, the downsampled history and the
alerts it raised (services/monitor, docs/monitor.md)."""

from __future__ import annotations

from shared.protocol.bot import limit, since
from shared.protocol.common import table
from shared.protocol.ops import Arg, Op

ALERT = "{id, ts, kind, severity, subject, message, figures, notified, sources}"

OPS = table(
    "monitor",
    Op("alerts", "alerts raised, oldest first (notified false: recorded within its kind's "
       "rate limit, not sent)",
       (since("alerts"), limit(100),
        Arg("kind", str, "only alerts of this kind ('' = every kind)", "")),
       f"[{ALERT}]", verb="alerts"),
    Op("mode", "the resource mode, since when and why, the figures it was judged on, the "
       "thresholds and the latest changes", (),
       "{mode, since, reason, memory_bytes, cpu_pct, thresholds, changes}", verb="mode"),
    Op("sample", "the latest sample: the tree, every slice and every program", (),
       "{ts, interval_s, enforced, tree, slices, programs, host_pressure, ...} or null",
       verb="monitor sample"),
    Op("history", "the downsampled history of one slice, program or the whole tree, "
       "oldest first",
       (Arg("name", str, "a slice, a program, or the tree's name (bitdaytrader)",
            cli="positional"), since("rows"), limit(1440)),
       "[{ts, name, kind, memory_process_max, memory_process_mean, memory_page_cache, "
       "memory_peak, cap, oom_kills, cpu_cores_mean, cpu_cores_max, throttled, "
       "psi_memory_some_avg10, psi_cpu_some_avg10, restarts, state}]",
       verb="monitor history"),
)
