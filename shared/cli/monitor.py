"""``bdt alerts``, ``bdt mode``, ``bdt monitor sample|history``: what the monitor saw and did."""

from __future__ import annotations

import argparse
import time
from typing import Any

from shared.cli.render import mib, print_json, table, ts_text, uptime
from shared.cli.verbs import JSON, op_verb, send
from shared.config import Config
from shared.protocol import monitor


def when(ms: float | None) -> str:
    return ts_text(ms, seconds=True)


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / (1 << 30):.2f}G"


def cores(used: float | None, quota: float | None) -> str:
    text = "-" if used is None else f"{used:.2f}"
    return text + ("" if quota is None else f"/{quota:g}")


@op_verb(monitor.OPS, "alerts", JSON)
def cmd_alerts(cfg: Config, args: argparse.Namespace) -> int:
    alerts = send(cfg, args)
    if args.json:
        print_json(alerts)
        return 0
    rows = [[when(a["ts"]), a["severity"], a["kind"], a["subject"], "+".join(a["sources"]),
             ("" if a["notified"] else "(held) ") + a["message"]] for a in alerts]
    table(rows, ["time (UTC)", "severity", "kind", "subject", "from", "message"])
    print(f"{len(alerts)} alert(s); (held): recorded within its kind's rate limit, not sent; "
          "from: the services that raised it (monitor+scheduler: one alert seen by both)")
    return 0


@op_verb(monitor.OPS, "mode", JSON)
def cmd_mode(cfg: Config, args: argparse.Namespace) -> int:
    m = send(cfg, args)
    if args.json:
        print_json(m)
        return 0
    t = m["thresholds"]
    print(f"resource mode {m['mode']} since {when(m['since'] * 1000)} UTC "
          f"({uptime(time.time() - m['since'])} ago): {m['reason']}")
    cpu = "-" if m["cpu_pct"] is None else f"{m['cpu_pct']:.0f}%"
    print(f"now        memory {gib(m['memory_bytes'])}  CPU {cpu} of the tree's quota")
    print(f"thresholds low_resource at {gib(t['low_memory_bytes'])} or "
          f"{t['low_cpu_pct']:g}%, critical at {gib(t['critical_memory_bytes'])} or "
          f"{t['critical_cpu_pct']:g}%; entered after {t['enter_samples']} samples, left after "
          f"{t['exit_samples']} under the threshold less {t['hysteresis']:.0%}")
    if m["changes"]:
        print()
        rows = [[when(c["ts"]), f"{c['old']} → {c['mode']}", c["reason"][:90]]
                for c in m["changes"]]
        table(rows, ["time (UTC)", "change", "why"])
    return 0


def _pressure(p: dict[str, Any] | None, resource: str) -> str:
    figures = (p or {}).get(resource)
    return "-" if not figures else f"{figures.get('some_avg10', 0):.1f}"


@op_verb(monitor.OPS, "sample", JSON)
def cmd_sample(cfg: Config, args: argparse.Namespace) -> int:
    s = send(cfg, args)
    if args.json:
        print_json(s)
        return 0
    if s is None:
        print("no sample yet")
        return 1
    cg = f"cgroups enforced ({s['cgroup_mode']})" if s["enforced"] else \
        f"cgroups NOT ENFORCED ({s['cgroup_reason']}): figures from RssAnon"
    cpu = "-" if s["cpu_pct"] is None else f"{s['cpu_pct']:.0f}%"
    print(f"sample at {when(s['ts'] * 1000)} UTC; {cg}")
    print(f"tree: process memory {mib(s['memory_bytes'])} / {mib(s['tree']['cap_bytes'])}, "
          f"CPU {cpu} of its quota; sampling cost {s['cost_s'] * 1000:.1f} ms CPU")
    rows = []
    for sl in [s["tree"], *s["slices"].values()]:
        rows.append([sl["slice"], sl["source"], f"{mib(sl['memory_process'])}/"
                     f"{mib(sl['cap_bytes'])}", mib(sl["memory_page_cache"]),
                     cores(sl["cpu_cores"], sl["cpu_quota"]),
                     "-" if sl["cpu_throttled"] is None else sl["cpu_throttled"],
                     "-" if sl["oom_kills"] is None else sl["oom_kills"],
                     _pressure(sl["pressure"], "memory"), _pressure(sl["pressure"], "cpu")])
    table(rows, ["slice", "from", "process/cap", "page cache", "cores/quota", "throttled", "oom",
                 "psi mem", "psi cpu"])
    print()
    rows = [[p["program"], p["state"], p["pid"] or "-", mib(p["memory_process"]),
             cores(p["cpu_cores"], None), p["restarts"], "yes" if p["confined"] else "no"]
            for p in s["programs"].values()]
    table(rows, ["program", "state", "pid", "process", "cores", "restarts", "in its slice"])
    host = s["host_pressure"]
    print(f"\nmachine pressure (PSI some avg10 %): memory {_pressure(host, 'memory')}, "
          f"cpu {_pressure(host, 'cpu')}, io {_pressure(host, 'io')}")
    return 0


@op_verb(monitor.OPS, "history", JSON)
def cmd_history(cfg: Config, args: argparse.Namespace) -> int:
    rows_in = send(cfg, args)
    if args.json:
        print_json(rows_in)
        return 0
    rows = [[when(r["ts"]), r["kind"], mib(r["memory_process_mean"]), mib(r["memory_process_max"]),
             mib(r["cap"]), mib(r["memory_page_cache"]),
             "-" if r["cpu_cores_mean"] is None else f"{r['cpu_cores_mean']:.2f}",
             "-" if r["oom_kills"] is None else r["oom_kills"],
             r["state"] or ""] for r in rows_in]
    table(rows, ["time (UTC)", "kind", "mean", "max", "cap", "page cache", "cores", "oom",
                 "state"])
    print(f"{len(rows_in)} row(s) for {args.name}")
    return 0
