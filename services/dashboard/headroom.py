"""Is there room for the dashboard? (seed 000 §6.1: it refuses to start without 600 MB.)

Two figures must both be at least the need:

- the machine's: what the kernel says is available (``psutil.virtual_memory().available``,
  ``free``'s "available" column) — other tenants of the VPS count;
- the project's tree's: the parent slice's cap less the tree's process memory (the kernel's
  figure where cgroups are enforced; otherwise the RssAnon of supervisord's descendants, as the
  monitor counts it on an LXC/OpenVZ VPS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from shared.config import Config
from shared.resources import cgexec
from shared.resources.processes import process_figures

MIB = 1 << 20
NEED_BYTES = 600 * MIB


@dataclass(frozen=True)
class Headroom:
    """One reading: bytes available on the machine and under the tree's cap, and how the
    tree's figure was obtained."""

    machine_bytes: int
    tree_bytes: int
    tree_cap_bytes: int
    tree_source: str

    def refusal(self, need_bytes: int = NEED_BYTES) -> str | None:
        """Why the dashboard must not start (one line with every figure), or None."""
        if min(self.machine_bytes, self.tree_bytes) >= need_bytes:
            return None
        return (f"refusing to start: the dashboard needs {need_bytes // MIB} MiB available on "
                f"the machine and in the bitdaytrader tree; {self.describe()}")

    def describe(self) -> str:
        return (f"the machine has {self.machine_bytes // MIB} MiB available, the tree "
                f"{self.tree_bytes // MIB} MiB left under its {self.tree_cap_bytes // MIB} MiB "
                f"cap ({self.tree_source})")


def supervised_rss(run_dir: Path) -> tuple[int, str]:
    """(RssAnon of supervisord and its descendants, how it was found)."""
    try:
        pid = int((run_dir / "supervisord.pid").read_text().strip())
    except (OSError, ValueError):
        pid = None
    memory = process_figures(pid)[0] if pid is not None else None
    if memory is None:
        return 0, "cgroups not enforced and no supervisord running: nothing of the tree counted"
    return memory, f"cgroups not enforced: RssAnon of supervisord's tree (pid {pid})"


def read_headroom(cfg: Config) -> Headroom:
    """The machine's and the tree's available memory now."""
    machine = psutil.virtual_memory().available
    table = cgexec.load_table(cfg)
    report = cgexec.slice_report(cfg, table)
    parent = report["slices"][0]
    cap = min(c for c in (table.parent.memory_max, parent.get("memory_max")) if c)
    if report["enforced"] and parent.get("memory_anon") is not None:
        used, source = parent["memory_anon"], f"cgroup {report['mode']} process memory"
    else:
        used, source = supervised_rss(cfg.run_dir)
    return Headroom(machine, max(0, cap - used), cap, source)
