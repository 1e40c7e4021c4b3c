"""The allocation table applied to the kernel: ``bdt cgexec`` and ``bdt cgroups``.

``cgexec`` is libcgroup's cgexec in spirit: create/update the slice from the table, move this
process in, apply the slice's nice value, then exec the component — so the limit holds from
the first byte the component allocates (memory already charged does not move with a process).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from shared.config import Config
from shared.resources.allocation import AllocationError, AllocationTable, load_allocation
from shared.resources.cgroup import NullBackend
from shared.resources.cgroup_open import open_backend

log = logging.getLogger("bdt.cgexec")


def load_table(cfg: Config) -> AllocationTable:
    path = cfg.get("cgroups.allocation")
    return load_allocation(Path(path) if path else None)


def supervisor_cgroup_file(cfg: Config) -> str:
    """/proc/PID/cgroup of the running supervisord, else our own: the tree hangs from the
    supervisor's cgroup even when an operator's shell sits in another one."""
    try:
        pid = int((cfg.run_dir / "supervisord.pid").read_text().strip())
        path = f"/proc/{pid}/cgroup"
        if Path(path).exists():
            return path
    except (OSError, ValueError):
        pass
    return "/proc/self/cgroup"


def open_tree(cfg: Config, *, from_supervisor: bool = False, create: bool = True):
    """The project's cgroup tree as a backend (see ``open_backend``); ``create`` False only
    reads — a report never makes cgroups."""
    proc = supervisor_cgroup_file(cfg) if from_supervisor else "/proc/self/cgroup"
    return open_backend(cfg.get("cgroups.tree"), proc_cgroup_path=proc, create=create)


def apply_all(cfg: Config, table: AllocationTable) -> Any:
    backend = open_tree(cfg, from_supervisor=True)
    backend.apply_parent(table.parent)
    for sl in table.slices.values():
        backend.apply(sl)
    return backend


def cgexec(cfg: Config, slice_name: str, argv: list[str]) -> NoReturn:
    """Place this process in ``slice_name`` and exec ``argv``; never returns."""
    if not argv:
        raise SystemExit("bdt cgexec: no command given after --")
    try:
        table = load_table(cfg)
        sl = table.slice(slice_name)
    except AllocationError as exc:
        raise SystemExit(f"bdt cgexec: {exc}") from None
    backend = open_tree(cfg)
    if backend.enforced:
        try:
            backend.apply_parent(table.parent)
            backend.apply(sl)
            backend.place(sl.name, os.getpid())
            log.info("pid %d in slice %s (memory cap %d MiB)", os.getpid(), sl.name,
                     sl.memory_max >> 20)
        except (OSError, ValueError) as exc:
            backend = NullBackend(backend.tree_name, f"applying slice {sl.name} failed: {exc}")
            log.error("cgroup limits NOT enforced for %s: %s", sl.name, backend.reason)
    if not backend.enforced and cfg.get("cgroups.required"):
        raise SystemExit(f"bdt cgexec: refusing to start {argv[0]}: cgroups.required is true and "
                         f"limits cannot be enforced ({backend.reason})")
    os.setpriority(os.PRIO_PROCESS, 0, sl.nice)
    end_with_parent()
    os.environ["BDT_SLICE"] = sl.name
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise SystemExit(f"bdt cgexec: cannot run {argv[0]}: {exc.strerror}") from None


PR_SET_PDEATHSIG = 1     # linux/prctl.h


def end_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies (prctl
    PR_SET_PDEATHSIG, kept across exec): a program whose supervisord was killed -9 stops
    instead of living on with parent 1 beside the next stack. If the parent is already gone
    by now, exit at once."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent:
        raise SystemExit("bdt cgexec: the parent died before the program started")


def slice_report(cfg: Config, table: AllocationTable, backend=None) -> dict[str, Any]:
    """Every slice of the table with its kernel figures (None where unknown)."""
    backend = backend or open_tree(cfg, from_supervisor=True, create=False)
    rows = []
    for sl in (table.parent, *table.slices.values()):
        stats = backend.parent_stats() if sl is table.parent else backend.stats(sl.name)
        rows.append({
            **dataclasses.asdict(stats),
            # the parent is the tree this stack really uses (cgroups.tree), not the table's name
            "slice": cfg.get("cgroups.tree") if sl is table.parent else sl.name,
            "programs": list(sl.programs),
            "cap_bytes": sl.memory_max,
            "table_cpu_weight": sl.cpu_weight,
            "table_cpu_quota": sl.cpu_quota,
        })
    return {"enforced": backend.enforced, "mode": backend.mode,
            "reason": backend.reason, "slices": rows}
