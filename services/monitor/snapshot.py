"""The cache put to work: after each sample the monitor writes its latest figures into the
cache service, under the ``monitor:`` namespace with a TTL, so ``bdt status`` (and anything
else) reads the whole picture in one round trip and a stale picture expires on its own when
the monitor stops.

Keys (values are msgpack maps, see docs/monitor.md; declared with their readers in
shared.protocol.cache_keys):

- ``monitor:sample`` — the tree, every slice and every program, compact;
- ``monitor:mode``   — the mode, since when and why;
- ``monitor:alerts`` — the alerts of the last hour at warning or worse.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from services.monitor.sampler import Sample, SliceSample
from shared.bus.cache_client import CacheClient
from shared.bus.client import BusError
from shared.config import Config
from shared.protocol.cache_keys import MONITOR_ALERTS, MONITOR_MODE, MONITOR_SAMPLE

log = logging.getLogger("bdt.monitor")


def _slice(sl: SliceSample) -> dict[str, Any]:
    return {"memory_process": sl.memory_process, "memory_page_cache": sl.memory_page_cache,
            "cap": sl.cap_bytes, "oom_kills": sl.oom_kills, "cpu_cores": sl.cpu_cores,
            "cpu_quota": sl.cpu_quota, "throttled": sl.cpu_throttled, "source": sl.source}


def compact(sample: Sample) -> dict[str, Any]:
    """The sample as ``monitor:sample`` holds it (what one status screen needs)."""
    return {
        "ts": sample.ts, "enforced": sample.enforced, "cgroup_mode": sample.cgroup_mode,
        "cgroup_reason": sample.cgroup_reason, "memory_bytes": sample.memory_bytes,
        "cpu_pct": sample.cpu_pct, "tree": _slice(sample.tree),
        "slices": {n: _slice(s) for n, s in sample.slices.items()},
        "programs": {n: {"state": p.state, "pid": p.pid, "uptime_s": p.uptime_s,
                         "slice": p.slice, "memory_process": p.memory_process,
                         "cpu_cores": p.cpu_cores, "restarts": p.restarts,
                         "confined": p.confined}
                     for n, p in sample.programs.items()},
        "supervisor_error": sample.supervisor_error,
    }


class Snapshot:
    """Writes the three keys in one ``mset``; a cache that is down costs one short timeout
    per sample and one warning a minute, never the sample."""

    def __init__(self, cfg: Config, ttl_s: float, timeout_ms: int) -> None:
        self.ttl_s = ttl_s
        self.client = CacheClient(cfg, timeout_ms=timeout_ms, retries=0)
        self.written = self.failed = 0
        self.last_error = ""
        self._warned_at = -1e9

    def write(self, sample: Sample, mode: dict[str, Any], alerts: list[dict[str, Any]]) -> bool:
        try:
            self.client.mset({MONITOR_SAMPLE.name: compact(sample), MONITOR_MODE.name: mode,
                              MONITOR_ALERTS.name: alerts},
                             ttl=self.ttl_s)
        except BusError as exc:
            self.failed += 1
            self.last_error = str(exc)
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("snapshot not written to the cache: %s", exc)
            return False
        self.written += 1
        return True

    def close(self) -> None:
        self.client.close()
