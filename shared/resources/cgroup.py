"""Put bitdaytrader processes into kernel cgroup slices and read their usage back.

One interface, three backends: V1Backend (legacy/hybrid hierarchies, via cgroupspy; in
cgroup_v1.py), V2Backend (unified hierarchy, plain file writes; cgroup_v2.py) and NullBackend
(limits not enforced, with the reason). This module holds the interface, NullBackend and the
pure helpers the backends share; ``shared.resources.cgroup_open.open_backend`` picks one (it
imports the backends, which import this module: no arrow points back).
The project tree is always created under the caller's own cgroup, so nothing outside the
delegated part of the hierarchy is ever touched.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from shared.resources.allocation import CPUSET_WORDS, LAST_CPU, Slice

log = logging.getLogger("bdt.cgroup")

Mode = Literal["v1", "v2", "hybrid", "none"]
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset")
V2_CONTROLLERS = ("memory", "cpu", "cpuset")
CFS_PERIOD_US = 100_000
UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded LLONG_MAX


class CgroupUnavailable(RuntimeError):
    """Cgroups cannot be used here (missing mount/controller, no permission)."""


# ---------------------------------------------------------------- pure helpers


def _mount_rows(mounts_text: str) -> list[tuple[str, str, set[str]]]:
    rows = []
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            rows.append((parts[1], parts[2], set(parts[3].split(","))))
    return rows


def v1_mounts(mounts_text: str) -> dict[str, str]:
    """Controller -> mount point for the v1 controllers we use (cpu and cpuacct may differ)."""
    found: dict[str, str] = {}
    for mnt, fstype, opts in _mount_rows(mounts_text):
        if fstype == "cgroup":
            for ctrl in V1_CONTROLLERS:
                if ctrl in opts:
                    found.setdefault(ctrl, mnt)
    return found


def v2_mount(mounts_text: str) -> str | None:
    return next((m for m, fstype, _ in _mount_rows(mounts_text) if fstype == "cgroup2"), None)


def detect_mode(mounts_text: str) -> Mode:
    """v1 / v2 / hybrid (v1 controllers plus a controller-less cgroup2) / none."""
    has_v1 = bool(v1_mounts(mounts_text))
    has_v2 = v2_mount(mounts_text) is not None
    if has_v1 and has_v2:
        return "hybrid"
    if has_v1:
        return "v1"
    return "v2" if has_v2 else "none"


def own_cgroup_paths(proc_self_cgroup_text: str) -> dict[str, str]:
    """Controller -> cgroup path from /proc/PID/cgroup; the v2 ``0::`` line is keyed "unified"."""
    paths: dict[str, str] = {}
    for line in proc_self_cgroup_text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            paths["unified"] = path
        for ctrl in filter(None, ctrls.split(",")):
            paths[ctrl] = path
    return paths


def manager_leaf(tree_name: str) -> str:
    """The v2 leaf the manager (supervisord) is parked in so its cgroup may have children."""
    return f"{tree_name}-manager"


def tree_base(own_path: str, tree_name: str) -> str:
    """Where the project tree goes: the caller's cgroup, or, when the caller already runs inside
    the project's tree (or in the manager's leaf beside it), the cgroup that tree hangs from —
    so children land in sibling slices, never nested inside the caller's."""
    segs = [s for s in own_path.split("/") if s]
    if tree_name in segs:
        segs = segs[: segs.index(tree_name)]
    elif segs and segs[-1] == manager_leaf(tree_name):
        segs = segs[:-1]
    return "/" + "/".join(segs)


def slice_from_cgroup_text(proc_cgroup_text: str, tree_name: str) -> str | None:
    """Slice name from /proc/PID/cgroup text: memory line on v1, the 0:: line otherwise."""
    paths = own_cgroup_paths(proc_cgroup_text)
    path = paths.get("memory", paths.get("unified", ""))
    segs = [s for s in path.split("/") if s]
    if tree_name in segs:
        i = segs.index(tree_name)
        if i + 1 < len(segs):
            return segs[i + 1]
    return None


def slice_of_pid(pid: int, tree_name: str = "bitdaytrader", proc_root: str = "/proc") -> str | None:
    """The slice a running process is in, or None (not in the tree, or the process is gone)."""
    try:
        text = Path(proc_root, str(pid), "cgroup").read_text()
    except OSError:
        return None
    return slice_from_cgroup_text(text, tree_name)


# ---------------------------------------------------------------- interface


@dataclass
class SliceStats:
    """Usage and limits of one slice; None means unknown or unlimited."""

    name: str
    path: str
    enforced: bool
    memory_current: int | None = None
    memory_peak: int | None = None
    memory_max: int | None = None
    memory_high: int | None = None
    # usage split: process memory, and page cache (files the slice read or wrote; the kernel
    # reclaims it before it would OOM-kill anything)
    memory_anon: int | None = None
    memory_file: int | None = None
    oom_kills: int | None = None
    cpu_usage_seconds: float | None = None
    cpu_quota: float | None = None
    cpu_weight: int | None = None
    cpu_idle: bool | None = None
    cpu_throttled: int | None = None       # quota periods in which the slice was throttled
    cpu_throttled_seconds: float | None = None
    pids: list[int] = field(default_factory=list)


def parse_cpus(text: str) -> set[int]:
    """A kernel cpu list ("0-2,5") as a set."""
    cpus: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def format_cpus(cpus: set[int]) -> str:
    """A set of CPUs as a kernel cpu list: {0, 1, 2, 5} → "0-2,5"."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def resolve_cpus(spec: str, available: set[int]) -> str:
    """The table's cpuset for the kernel: "last" is the highest CPU of ``available``,
    "all-but-last" every other one (on a one-CPU machine both are its only CPU); a literal
    list is passed on as written."""
    if spec not in CPUSET_WORDS:
        return spec
    if not available:
        raise ValueError("no CPU available to the tree")
    last = max(available)
    if spec == LAST_CPU:
        return str(last)
    return format_cpus(available - {last} or {last})


def set_weight_and_idle(idle: Path, s: Slice, set_weight: Callable[[], None]) -> None:
    """The kernel refuses a new weight for an idle group (EINVAL): leave idle first when the
    table says so, set the weight only while not idle, enter idle last."""
    if not s.cpu_idle:
        _set_cpu_idle(idle, s)
    if read_value(idle) != "1":
        set_weight()
    if s.cpu_idle:
        _set_cpu_idle(idle, s)


def _set_cpu_idle(path: Path, s: Slice) -> None:
    """cpu.idle (Linux ≥ 5.15, v1 and v2): the slice gets only CPU time no sibling wants, and
    a waking task of any other slice preempts it at once. A low weight alone still lets a
    busy batch job finish its time slice first: milliseconds of delay for the bot."""
    try:
        path.write_text("1" if s.cpu_idle else "0")
    except OSError as e:
        if s.cpu_idle:
            log.warning("slice %s: cpu_idle is set but %s cannot be written (%s): only its "
                        "cpu_weight applies", s.name, path, e.strerror)


class CgroupBackend(Protocol):
    enforced: bool
    reason: str
    mode: str
    tree_name: str

    def apply_parent(self, parent: Slice) -> None: ...
    def apply(self, slice: Slice) -> None: ...
    def place(self, slice_name: str, pid: int) -> None: ...
    def stats(self, slice_name: str) -> SliceStats: ...
    def parent_stats(self) -> SliceStats: ...
    def remove(self, slice_name: str) -> bool: ...
    def remove_tree(self) -> bool: ...
    def slice_paths(self, slice_name: str) -> dict[str, Path]: ...
    def tree_paths(self) -> dict[str, Path]: ...


class NullBackend:
    """Limits are not enforced (no writable cgroups); every call is a harmless no-op."""

    enforced = False
    mode = "none"

    def __init__(self, tree_name: str, reason: str) -> None:
        self.tree_name = tree_name
        self.reason = reason

    def apply_parent(self, parent: Slice) -> None:
        pass

    def apply(self, slice: Slice) -> None:
        pass

    def place(self, slice_name: str, pid: int) -> None:
        pass

    def stats(self, slice_name: str) -> SliceStats:
        return SliceStats(name=slice_name, path="", enforced=False)

    def parent_stats(self) -> SliceStats:
        return self.stats(self.tree_name)

    def remove(self, slice_name: str) -> bool:
        return True

    def remove_tree(self) -> bool:
        return True

    def slice_paths(self, slice_name: str) -> dict[str, Path]:
        return {}

    def tree_paths(self) -> dict[str, Path]:
        return {}


def reset_v1_peak(memory_dir: Path) -> None:
    """Restart a cgroup v1 memory cgroup's peak (writing 0 to memory.max_usage_in_bytes);
    quietly nothing when it cannot be written. cgroup v2's memory.peak cannot be reset: there
    the peak is the cgroup's since it was made."""
    try:
        (memory_dir / "memory.max_usage_in_bytes").write_text("0")
    except OSError:
        pass


def read_value(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines: memory.stat, cpu.stat, memory.events) as
    {key: int}; lines whose value is not a whole number are left out; {} when unreadable."""
    out: dict[str, int] = {}
    for line in (read_value(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def limit_or_none(value: int | None) -> int | None:
    return None if value is None or value >= UNLIMITED else value


def make_dir(path: Path) -> bool:
    """mkdir that treats "already exists" as success: supervisord starts several cgexecs at
    once and they race to create the same tree. True when this call made it."""
    try:
        path.mkdir()
        return True
    except FileExistsError:
        return False


def remove_dir(path: Path) -> bool:
    """rmdir a cgroup; True if gone. Real cgroupfs dirs rmdir with their interface files in
    place, so ENOTEMPTY only happens on a plain-directory stand-in (tests): clear its files."""
    try:
        path.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno != errno.ENOTEMPTY or any(p.is_dir() for p in path.iterdir()):
            return False
    for p in path.iterdir():
        p.unlink()
    path.rmdir()
    return True

