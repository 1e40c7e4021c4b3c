"""``bdt status`` (the one screen), ``bdt ping`` and ``bdt latency``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from shared.bus.client import BusClient, BusError
from shared.bus.endpoints import NOT_SERVING, SERVICES
from shared.cli.render import mib, print_json, table, uptime
from shared.cli.verbs import JSON, op_verb, send, verb
from shared.config import Config
from shared.formatting import money, price, quantity
from shared.programs import PROGRAMS
from shared.protocol.cache_keys import (
    BOT_EQUITY,
    BOT_POSITION,
    MONITOR_ALERTS,
    MONITOR_MODE,
    MONITOR_SAMPLE,
    SCHEDULER_CURRENT,
    SCHEDULER_JOBS,
)
from shared.protocol.common import COMMON
from shared.protocol.ops import OpTable
from shared.resources import cgexec, supervisor
from shared.resources.allocation import AllocationError

COMMON_OPS = OpTable("any service", {op.name: op for op in COMMON})


def gather_status(cfg: Config) -> dict[str, Any]:
    """Every program: supervisord's state and pid, whether it runs on demand only
    (``autostart=false``: a batch job or the dashboard, ``idle`` while not running), and the
    service's own status if it answers."""
    try:
        rows = supervisor.process_table(cfg)
        supervisor_error = None
    except OSError as exc:
        rows, supervisor_error = [], f"supervisord not reachable at " \
            f"{supervisor.socket_path(cfg)}: {exc}"
    on_demand = {p.name for p in PROGRAMS.values() if not p.kind.autostart}
    programs = []
    for info in rows:
        name = info["name"]
        running = info["statename"] in ("RUNNING", "STARTING")
        entry: dict[str, Any] = {
            "program": name,
            "state": info["statename"],
            "idle": name in on_demand and not running,
            "pid": info["pid"] or None,
            "uptime_s": (info["now"] - info["start"]) if info["statename"] == "RUNNING" else 0,
            "exit_status": info["exitstatus"],
            "spawn_error": info.get("spawnerr") or None,
        }
        if info["statename"] == "RUNNING" and name in SERVICES and name not in NOT_SERVING:
            try:
                with BusClient(name, cfg, timeout_ms=500, retries=0) as client:
                    entry["service"] = client.call("status")
            except BusError as exc:
                entry["service_error"] = str(exc)
        programs.append(entry)
    cgroups = _cgroup_figures(cfg, programs)
    return {"supervisord": supervisor_error or "running", "programs": programs, **cgroups}


def _cgroup_figures(cfg: Config, programs: list[dict[str, Any]]) -> dict[str, Any]:
    """Memory used / cap, peak and OOM kills per program, read from its slice (not from ps)."""
    try:
        alloc = cgexec.load_table(cfg)
    except AllocationError as exc:
        return {"cgroups": {"tree": cfg.get("cgroups.tree"), "enforced": False,
                            "reason": str(exc)}}
    report = cgexec.slice_report(cfg, alloc)
    by_slice = {row["slice"]: row for row in report["slices"]}
    for entry in programs:
        try:
            row = by_slice[alloc.slice_for_program(entry["program"]).name]
        except AllocationError:
            continue
        entry["slice"] = row["slice"]
        entry["memory_bytes"] = row["memory_current"]
        # what the kernel acts on at the cap is process memory; page cache (files read or
        # written) is reclaimed first — so the two are shown apart
        entry["memory_process_bytes"] = row["memory_anon"]
        entry["memory_page_cache_bytes"] = row["memory_file"]
        entry["memory_peak_bytes"] = row["memory_peak"]
        entry["memory_cap_bytes"] = row["cap_bytes"]
        entry["oom_kills"] = row["oom_kills"]
        entry["cpu_seconds"] = row["cpu_usage_seconds"]
    parent = report["slices"][0]
    return {"cgroups": {"tree": parent["slice"], "enforced": report["enforced"],
                        "mode": report["mode"],
                        "reason": report["reason"], "total_bytes": parent["memory_current"],
                        "total_cap_bytes": parent["cap_bytes"]}}


SNAPSHOT_KEYS = tuple(k.name for k in (MONITOR_SAMPLE, MONITOR_MODE, MONITOR_ALERTS, BOT_POSITION,
                                        BOT_EQUITY, SCHEDULER_JOBS, SCHEDULER_CURRENT))


def read_snapshot(cfg: Config) -> dict[str, Any] | None:
    """What the monitor, the bot and the scheduler last wrote into the cache, in one round
    trip; None when the cache or the monitor's sample is not there."""
    from shared.bus.cache_client import CacheClient

    try:
        client = CacheClient(cfg, timeout_ms=300, retries=0)
        try:
            values = client.mget(list(SNAPSHOT_KEYS))
        finally:
            client.close()
    except BusError:
        return None
    snap = dict(zip(SNAPSHOT_KEYS, values, strict=True))
    return snap if any(v is not None for v in snap.values()) else None


def _bar(used: int | None, cap: int | None) -> str:
    """'66M/500M [#.........]': process memory against the cap, and as a bar."""
    n = max(0, min(10, round(10 * used / cap))) if used and cap else 0
    return f"{mib(used)}/{mib(cap)} [{'#' * n}{'.' * (10 - n)}]"


def print_screen(snap: dict[str, Any] | None, status: dict[str, Any] | None = None,
                 tree_name: str = "") -> None:
    """The one screen, one layout whatever is down: the resource mode, the tree, every program
    (from supervisord and the cgroups when ``status`` is given, else from the monitor's
    snapshot), jobs, position and P&L, alerts. What cannot be known says why in its place."""
    snap = snap or {}
    sample, mode = snap.get(MONITOR_SAMPLE.name) or {}, snap.get(MONITOR_MODE.name) or {}
    cg = (status or {}).get("cgroups") or {}
    tree_name = cg.get("tree") or tree_name
    used = cg.get("total_bytes") if cg else (sample.get("tree") or {}).get("memory_process")
    cap = cg.get("total_cap_bytes") if cg else (sample.get("tree") or {}).get("cap")
    enforced = cg["enforced"] if cg else sample.get("enforced")
    limits = f"enforced ({cg.get('mode') or sample.get('cgroup_mode')})" if enforced else \
        f"NOT ENFORCED: {cg.get('reason') or sample.get('cgroup_reason') or 'unknown'}"
    head = f"resource mode {mode['mode']}  ({mode.get('reason') or '-'})" if mode else \
        "resource mode unknown  (no monitor snapshot in the cache: cache or monitor down)"
    cpu = f"{sample.get('cpu_pct') or 0:.0f}% of quota" if sample else "-"
    print(f"{head}   tree {tree_name} {_bar(used, cap)}  cpu {cpu}   cgroup limits: {limits}")
    if status and status["supervisord"] != "running":
        print(status["supervisord"])
    snap_programs = sample.get("programs") or {}
    rows = []
    if status is not None:
        for p in status["programs"]:
            svc = p.get("service", {})
            note = p.get("service_error") or svc.get("not_yet") or p.get("spawn_error") or ""
            if p["idle"] and p.get("exit_status") and p["state"] == "EXITED":
                note = note or f"last exit {p['exit_status']}"
            oom = p.get("oom_kills")
            rows.append([p["program"], "idle" if p["idle"] else p["state"], p["pid"] or "-",
                         uptime(p["uptime_s"]), p.get("slice", "-"),
                         _bar(p.get("memory_process_bytes"), p.get("memory_cap_bytes")),
                         mib(p.get("memory_page_cache_bytes")), "-" if oom is None else oom,
                         (snap_programs.get(p["program"]) or {}).get("restarts", "-"), note])
    else:
        for name, p in snap_programs.items():
            sl = sample["slices"].get(p.get("slice") or "", {})
            rows.append([name, p["state"], p.get("pid") or "-", uptime(p.get("uptime_s") or 0),
                         p.get("slice") or "-", _bar(sl.get("memory_process"), sl.get("cap")),
                         mib(sl.get("memory_page_cache")), sl.get("oom_kills", "-"),
                         p.get("restarts", 0), ""])
    table(rows, ["program", "state", "pid", "uptime", "slice", "process/cap", "page cache",
                 "oom", "restarts", "note"])
    print("(process/cap: the slice's process memory, which the cap is about; page cache is "
          "reclaimed before anything is killed. Programs of one slice share its figures. "
          "idle: a program started on demand, not running now.)")
    jobs = snap.get(SCHEDULER_JOBS.name)
    for job in jobs or []:
        last = job.get("last") or {}
        print(f"job {job['job']:12} next {job.get('next_run') or '-'}   last "
              f"{last.get('state', '-')} {last.get('slot', '')}")
    if jobs is None:
        print("jobs: unknown (no scheduler snapshot in the cache)")
    current = snap.get(SCHEDULER_CURRENT.name)
    if current:
        print(f"running: {current['job']} run {current['id']} ({current['trigger']})")
    pos, eq = snap.get(BOT_POSITION.name), snap.get(BOT_EQUITY.name)
    if pos and eq:
        print(f"position {quantity(pos['qty'], signed=True)} {pos['symbol']} @ "
              f"{price(pos['avg_price'])}   equity {money(eq['equity'])}  today "
              f"{money(eq['today_pnl'], signed=True)}")
    else:
        print("position: unknown (no bot snapshot in the cache)")
    for alert in (snap.get(MONITOR_ALERTS.name) or [])[:5]:
        print(f"ALERT {alert.get('severity', '')} {alert.get('kind', alert.get('alert', ''))}: "
              f"{alert.get('message', '')}")


@verb("status", "the one screen: mode, every program with its memory against the cap, jobs, "
                "position, alerts", JSON)
def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    snap = read_snapshot(cfg)
    status = gather_status(cfg)
    if args.json:
        print_json({**status, "snapshot": snap})
    else:
        print_screen(snap, status, cfg.get("cgroups.tree"))
    return 0 if status["supervisord"] == "running" else 1


@op_verb(COMMON_OPS, "ping")
def cmd_ping(cfg: Config, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    reply = send(cfg, args)
    print(f"{args.service}: pong from pid {reply['pid']} in "
          f"{(time.perf_counter() - started) * 1000:.2f} ms")
    return 0


@op_verb(COMMON_OPS, "latency")
def cmd_latency(cfg: Config, args: argparse.Namespace) -> int:
    reply = send(cfg, args)
    rows = [[name, p["n"], p["p50_us"], p["p99_us"], p["max_us"]] for name, p in reply.items()]
    table(rows, ["timing", "n", "p50 µs", "p99 µs", "max µs"])
    return 0
