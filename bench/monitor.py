"""The monitor's own cost (issue 16): CPU per sample and its memory, in a whole stack under
the real supervisord (tests/stack.py) with the metrics endpoint on and scraped.

The monitor samples every second here (five times its default) with the services' status read
every third sample and the endpoint scraped as often — the default's proportions (5 s, 15 s) —
so a minute gives enough samples to measure: CPU per sample is the monitor process's CPU time
(user + system, all threads, from /proc) over the samples it took, and the share of a core at
the default interval follows from it. Memory is the process's RSS, RssAnon and peak RSS
(VmHWM) at the end. Targets: < 1 % of a core, < 60 MB.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from bench import common
from tests.helpers import wait_until
from tests.stack import AUTOSTART, Stack

DEFAULT_INTERVAL_S = 5.0          # monitor.sample_interval_s's default
MiB = 1 << 20


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def bench(quick: bool) -> dict[str, Any]:
    seconds = 20.0 if quick else 60.0
    interval = 1.0
    port = common.free_port()
    stack = Stack(BDT_MARKET__SAMPLE_BARS="200", BDT_BOT__WAIT_SUBSCRIBERS="0",
                  BDT_MONITOR__SAMPLE_INTERVAL_S=str(interval),
                  BDT_MONITOR__STATUS_INTERVAL_S=str(3 * interval),
                  BDT_MONITOR__METRICS_PORT=str(port))
    try:
        stack.start().wait_running(AUTOSTART, timeout=60)
        pid = stack.pids()["monitor"]
        proc = psutil.Process(pid)
        wait_until(lambda: stack.status("monitor")["samples"] >= 3, timeout=30,
                   what="the monitor's first samples")
        url = f"http://127.0.0.1:{port}/metrics"
        before = stack.status("monitor")["samples"]
        cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
        scraped = 0
        while time.monotonic() - t0 < seconds:
            body = urllib.request.urlopen(url, timeout=5).read()
            scraped += 1
            time.sleep(3 * interval)
        cpu, wall = sum(proc.cpu_times()[:2]) - cpu0, time.monotonic() - t0
        status = stack.status("monitor")
        samples = status["samples"] - before      # the ring (720) is far from full here
        per_sample_ms = 1000 * cpu / max(1, samples)
        at_default_pct = 100 * per_sample_ms / 1000 / DEFAULT_INTERVAL_S
        measured_pct = 100 * cpu / wall
        rss = proc.memory_info()
        results = {
            **common.metadata(quick),
            "window_s": round(wall, 1), "sample_interval_s": interval, "samples": samples,
            "scrapes": scraped, "metrics_bytes": len(body),
            "cpu_s": round(cpu, 3), "cpu_pct_of_core_measured": round(measured_pct, 2),
            "cpu_ms_per_sample": round(per_sample_ms, 2),
            "cpu_ms_per_sample_inside": status["sample_cpu_ms"],
            "cpu_pct_of_core_at_default_interval": round(at_default_pct, 3),
            "rss_mib": round(rss.rss / MiB, 1),
            "rss_anon_mib": round((rss.rss - rss.shared) / MiB, 1),
            "peak_rss_mib": round(_status_kib(pid, "VmHWM") / 1024, 1),
            "cgroups_enforced": status["cgroups_enforced"],
        }
    finally:
        stack.remove()
    common.print_table(
        "monitor: its own cost (whole stack, metrics scraped)", ["figure", "value", "target"],
        [["samples taken (1 s apart)", results["samples"], ""],
         ["CPU per sample, ms (process, all threads)", results["cpu_ms_per_sample"], ""],
         ["  of which the sampling itself, ms", results["cpu_ms_per_sample_inside"], ""],
         ["CPU at 1 s samples, % of a core", results["cpu_pct_of_core_measured"], ""],
         ["CPU at the default 5 s, % of a core", results["cpu_pct_of_core_at_default_interval"],
          "< 1"],
         ["RSS, MiB", results["rss_mib"], "< 60"],
         ["RssAnon, MiB", results["rss_anon_mib"], ""],
         ["peak RSS, MiB", results["peak_rss_mib"], ""]])
    common.verdict(results["cpu_pct_of_core_at_default_interval"] < 1.0,
                   "under 1 % of a core at the default interval")
    common.verdict(results["peak_rss_mib"] < 60, "peak RSS under 60 MB")
    return results
