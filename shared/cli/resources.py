"""``bdt cgexec``, ``bdt cgroups …``, ``bdt doctor``: the allocation table and the machine."""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli.render import mib, print_json, table
from shared.cli.verbs import JSON, opt, verb
from shared.config import Config
from shared.logs import setup_logging
from shared.resources import cgexec, supervisor
from shared.resources.allocation import AllocationError


@verb("cgexec", "run CMD inside a slice of the allocation table (supervisord's wrapper)",
      opt("--program", help="the program, whose slice the allocation table names (instead of "
                            "SLICE)"),
      opt("command", nargs=argparse.REMAINDER, help="SLICE -- CMD [ARGS...]"))
def cmd_cgexec(cfg: Config, args: argparse.Namespace) -> int:
    words = list(args.command)
    if args.program is not None:
        args.slice = cgexec.load_table(cfg).slice_for_program(args.program).name
    elif words and words[0] != "--":
        args.slice = words.pop(0)
    else:
        raise SystemExit("bdt cgexec: give SLICE or --program NAME before -- CMD")
    args.command = words
    setup_logging(f"cgexec[{args.slice}]", cfg.get("log.level"))
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    cgexec.cgexec(cfg, args.slice, argv)  # never returns


def print_slices(report: dict[str, Any]) -> None:
    state = f"enforced ({report['mode']})" if report["enforced"] else \
        f"NOT ENFORCED ({report['reason']})"
    print(f"cgroup limits: {state}")
    rows = []
    for r in report["slices"]:
        quota = r["cpu_quota"] if r["cpu_quota"] is not None else r["table_cpu_quota"]
        rows.append([r["slice"], mib(r["memory_anon"]), mib(r["memory_file"]),
                     mib(r["memory_current"]), mib(r["memory_peak"]),
                     mib(r["memory_max"] if r["memory_max"] is not None else r["cap_bytes"]),
                     "-" if r["oom_kills"] is None else r["oom_kills"],
                     "-" if r["cpu_usage_seconds"] is None else f"{r['cpu_usage_seconds']:.1f}s",
                     "-" if quota is None else f"{quota:g}",
                     "-" if r["cpu_throttled"] is None else r["cpu_throttled"],
                     "idle" if r["cpu_idle"] else r["cpu_weight"] or r["table_cpu_weight"],
                     len(r["pids"]),
                     ",".join(r["programs"])])
    table(rows, ["slice", "process", "page cache", "usage", "peak", "cap", "oom", "cpu", "quota",
                 "throttled", "weight", "procs", "programs"])


@verb("cgroups apply", "create/update every slice from the table (idempotent)", JSON)
@verb("cgroups show", "every slice: usage, peak, cap, OOM kills, CPU, throttled periods", JSON)
@verb("cgroups clean", "remove the project's empty slices")
def cmd_cgroups(cfg: Config, args: argparse.Namespace) -> int:
    alloc = cgexec.load_table(cfg)
    if args.verb.words == "cgroups apply":
        backend = cgexec.apply_all(cfg, alloc)
        report = cgexec.slice_report(cfg, alloc, backend)
    elif args.verb.words == "cgroups clean":
        backend = cgexec.open_tree(cfg, from_supervisor=True, create=False)
        busy = [n for n in alloc.slices if not backend.remove(n)]
        if not busy:
            backend.remove_tree()
        print("removed the empty slices" + (f"; still in use: {', '.join(busy)}" if busy else ""))
        return 0
    else:
        report = cgexec.slice_report(cfg, alloc)
    if getattr(args, "json", False):
        print_json(report)
    else:
        print_slices(report)
    return 0


def program_table_problem(alloc: Any) -> str | None:
    """What is wrong between supervisord.conf's programs and the allocation table's, if any."""
    try:
        conf = supervisor.read_conf()
    except (OSError, ValueError, KeyError) as exc:
        return f"supervisord.conf unreadable: {exc}"
    declared = {p for s in alloc.slices.values() for p in s.programs}
    extra, missing = sorted(set(conf) - declared), sorted(declared - set(conf))
    if extra or missing:
        return (f"supervisord.conf and the allocation table disagree: in the conf only "
                f"{extra or '-'}, in the table only {missing or '-'}")
    return None


def _program_of(cmdline: list[str], commands: dict[str, str]) -> str | None:
    """Which program of supervisord.conf ``cmdline`` is (its ``python -m MODULE ARGS``)."""
    text = " ".join(cmdline)
    best = None
    for name, command in commands.items():
        tail = command.split(" -- ", 1)[-1].replace("python ", "", 1)   # "-m services.x ..."
        if tail in text and (best is None or len(tail) > len(commands[best])):
            best = name
    return best


def slice_occupants(alloc: Any, report: dict[str, Any]) -> list[str]:
    """Foreign processes (not one of the slice's programs) and duplicates (two processes of
    one program) in the project's slices: what a second stack on the same var directory, or
    the leftovers of a supervisord killed -9, look like."""
    import psutil

    try:
        commands = {n: p["command"] for n, p in supervisor.read_conf().items()}
    except (OSError, ValueError, KeyError):
        return []
    found = []
    for row in report["slices"][1:]:
        seen: dict[str, list[int]] = {}
        for pid in row["pids"]:
            try:
                proc = psutil.Process(pid)
                cmdline = proc.cmdline()
            except psutil.Error:
                continue
            program = _program_of(cmdline, commands)
            if program is None or program not in alloc.slices[row["slice"]].programs:
                found.append(f"slice {row['slice']} holds a foreign process: pid {pid} "
                             f"({' '.join(cmdline)[:80]})")
                continue
            seen.setdefault(program, []).append(pid)
            if proc.ppid() == 1:
                found.append(f"slice {row['slice']}: {program} pid {pid} has no supervisor "
                             "(parent 1): left over from a supervisord that died")
        for program, pids in seen.items():
            if len(pids) > 1:
                found.append(f"slice {row['slice']} holds {len(pids)} processes of {program} "
                             f"(pids {', '.join(map(str, pids))}): two stacks on one var "
                             "directory, or the leftovers of a supervisord that died?")
    return found


@verb("doctor", "check config, allocation table, cgroups, run directory, supervisord")
def cmd_doctor(cfg: Config, args: argparse.Namespace) -> int:
    """Can this machine run the stack as designed? Each line: ok / WARN / FAIL and why."""
    problems = 0
    print(f"ok    config: {', '.join(cfg.sources)}")
    try:
        alloc = cgexec.load_table(cfg)
        print(f"ok    allocation table: {len(alloc.slices)} slices, parent cap "
              f"{mib(alloc.parent.memory_max)}")
    except AllocationError as exc:
        print(f"FAIL  allocation table: {exc}")
        return 1
    conf_problem = program_table_problem(alloc)
    if conf_problem:
        problems += 1
        print(f"FAIL  {conf_problem}")
    else:
        print("ok    supervisord.conf runs exactly the allocation table's programs")
    report = cgexec.slice_report(cfg, alloc)
    if report["enforced"]:
        print(f"ok    cgroup limits enforced ({report['mode']}), tree "
              f"{report['slices'][0]['path']}")
    else:
        problems += 1
        print(f"WARN  cgroup limits NOT enforced: {report['reason']}")
    from shared.storage.bar_store import QUARANTINE_GLOB

    for moved in sorted((cfg.var_dir / "data" / "market").glob(QUARANTINE_GLOB)):
        problems += 1
        print(f"WARN  corrupt market-data partition moved aside: {moved} (its day is served "
              "from SQLite if still there, else a gap; inspect, then delete it)")
    from shared.storage.stores import STORES, check, set_aside

    for store in STORES:
        path = store.path(cfg)
        problem = check(path)
        if problem is None:
            if path.exists():
                print(f"ok    {store.what} {path}")
            continue
        problems += 1
        way_out = ("restore it from a backup, or move it aside to start an empty one" if
                   store.history else f"{store.owner} moves it aside and makes it anew at start")
        print(f"FAIL  {store.what} {path}: unusable ({problem}); {way_out}")
    for moved in set_aside(cfg):
        problems += 1
        print(f"WARN  moved aside: {moved} (kept for inspection; delete it when done)")
    for line in slice_occupants(alloc, report):
        problems += 1
        print(f"WARN  {line}")
    run = cfg.run_dir
    if run.is_dir() and (run.stat().st_mode & 0o077) == 0:
        print(f"ok    run directory {run} is private (0700)")
    else:
        problems += 1
        print(f"WARN  run directory {run} is missing or not 0700")
    try:
        supervisor.process_table(cfg)
        print("ok    supervisord answers on its unix socket")
    except OSError as exc:
        print(f"WARN  supervisord not reachable: {exc}")
    return 0 if problems == 0 else 1
