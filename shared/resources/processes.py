"""Memory and CPU of a process tree, as the monitor counts them where cgroups are not enforced
(the monitor's sampler and the dashboard's headroom check both use it)."""

from __future__ import annotations

from pathlib import Path

import psutil


def children_of(pid: int, proc_root: Path = Path("/proc")) -> list[int]:
    """Every descendant of ``pid`` (from /proc/PID/task/TID/children; [] when gone)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list((proc_root / str(current) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def process_figures(pid: int) -> tuple[int | None, float | None]:
    """(RssAnon bytes, CPU seconds) of ``pid`` and its descendants; (None, None) when gone."""
    memory, cpu, found = 0, 0.0, False
    for p in (pid, *children_of(pid)):
        try:
            proc = psutil.Process(p)
            with proc.oneshot():
                mem = proc.memory_info()
                times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        found = True
        memory += max(0, mem.rss - mem.shared)
        cpu += times.user + times.system
    return (memory, cpu) if found else (None, None)
