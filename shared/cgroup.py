"""Put bitdaytrader processes into kernel cgroup slices and read their usage back.

One interface, three backends: V1Backend (legacy/hybrid hierarchies, via cgroupspy), V2Backend
(unified hierarchy, plain file writes) and NullBackend (limits not enforced, with the reason).
The project tree is always created under the caller's own cgroup, so nothing outside the
delegated part of the hierarchy is ever touched; ``open_backend`` never raises just because
cgroups cannot be written -- it warns once and returns a NullBackend instead.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from cgroupspy.controllers import (
    Controller,
    CpuAcctController,
    CpuController,
    CpuSetController,
    MemoryController,
)
from cgroupspy.nodes import Node

from shared.allocation import CPUSET_WORDS, LAST_CPU, Slice

log = logging.getLogger("bdt.cgroup")

Mode = Literal["v1", "v2", "hybrid", "none"]
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset")
V2_CONTROLLERS = ("memory", "cpu", "cpuset")
CFS_PERIOD_US = 100_000
_UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded LLONG_MAX
_V1_CLASSES: dict[str, type[Controller]] = {
    "memory": MemoryController,
    "cpu": CpuController,
    "cpuacct": CpuAcctController,
    "cpuset": CpuSetController,
}


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


def _set_weight_and_idle(idle: Path, s: Slice, set_weight: Callable[[], None]) -> None:
    """The kernel refuses a new weight for an idle group (EINVAL): leave idle first when the
    table says so, set the weight only while not idle, enter idle last."""
    if not s.cpu_idle:
        _set_cpu_idle(idle, s)
    if _read(idle) != "1":
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


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= _UNLIMITED else value


def _mkdir(path: Path) -> bool:
    """mkdir that treats "already exists" as success: supervisord starts several cgexecs at
    once and they race to create the same tree. True when this call made it."""
    try:
        path.mkdir()
        return True
    except FileExistsError:
        return False


def _rmdir(path: Path) -> bool:
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


# ---------------------------------------------------------------- cgroup v1


class V1Backend:
    """Legacy hierarchies: one directory per controller mount, each rooted at our own cgroup."""

    enforced = True
    reason = ""
    mode = "v1"

    def __init__(self, tree_name: str, bases: dict[str, Path]) -> None:
        self.tree_name = tree_name
        self.bases = bases  # controller -> directory the tree hangs from
        self.roots = {c: b / tree_name for c, b in bases.items()}

    def _ctl(self, ctrl: str, path: Path) -> Controller:
        # A bare Node rooted at the directory: cgroupspy's Tree would walk the whole hierarchy.
        return _V1_CLASSES[ctrl](Node(str(path)))

    def slice_paths(self, slice_name: str) -> dict[str, Path]:
        return {c: r / slice_name for c, r in self.roots.items()}

    def ensure_root(self) -> None:
        """mkdir the tree root in every hierarchy; roll back what we made if one fails."""
        made: list[Path] = []
        try:
            for ctrl, base in self.bases.items():
                root = self.roots[ctrl]
                if not _mkdir(root):
                    continue  # already there (another program's cgexec may race us)
                made.append(root)
                if ctrl == "memory":
                    self._use_hierarchy(root)
                if ctrl == "cpuset":
                    self._copy_cpuset(base, root, None)
        except OSError:
            for path in reversed(made):
                _rmdir(path)
            raise

    def _use_hierarchy(self, root: Path) -> None:
        # Without use_hierarchy=1 the parent's limit does not cover its children (old kernels);
        # it must be set before children exist. Newer kernels force 1 and may refuse writes.
        mem = MemoryController(Node(str(root)))
        try:
            if not mem.use_hierarchy:
                mem.use_hierarchy = True
        except OSError as e:
            log.debug("memory.use_hierarchy not writable at %s: %s", root, e)

    def _copy_cpuset(self, parent: Path, child: Path, cpus: str | None) -> None:
        # The kernel refuses tasks in a cpuset cgroup whose cpus/mems are empty.
        src = CpuSetController(Node(str(parent)))
        dst = CpuSetController(Node(str(child)))
        if cpus:
            # cgroupspy's CommaDashSetFile cannot take a "0-1" string, so write it raw.
            dst.set_property(b"cpuset.cpus", resolve_cpus(cpus, set(src.cpus)))
        else:
            dst.cpus = src.cpus
        if not dst.mems:
            dst.mems = src.mems

    def _set_memory(self, path: Path, s: Slice) -> None:
        mem = MemoryController(Node(str(path)))
        if not (path / "memory.memsw.limit_in_bytes").exists():
            mem.limit_in_bytes = s.memory_max
        else:
            # memsw (memory+swap) must stay >= limit at every step, else EINVAL: when the new
            # limit is above the current memsw, raise memsw first; otherwise lower limit first.
            memsw = None if s.swap_max is None else s.memory_max + s.swap_max
            if memsw is None or s.memory_max > (mem.memsw_limit_in_bytes or _UNLIMITED):
                mem.memsw_limit_in_bytes = memsw
                mem.limit_in_bytes = s.memory_max
            else:
                mem.limit_in_bytes = s.memory_max
                mem.memsw_limit_in_bytes = memsw
        mem.soft_limit_in_bytes = s.memory_high

    def _set_limits(self, dirs: dict[str, Path], parents: dict[str, Path], s: Slice) -> None:
        if "memory" in dirs:
            self._set_memory(dirs["memory"], s)
        if "cpu" in dirs:
            cpu = CpuController(Node(str(dirs["cpu"])))
            cpu.cfs_period_us = CFS_PERIOD_US
            quota = None if s.cpu_quota is None else int(s.cpu_quota * CFS_PERIOD_US)
            cpu.cfs_quota_us = quota
            _set_weight_and_idle(dirs["cpu"] / "cpu.idle", s,
                                 lambda: setattr(cpu, "shares", max(2, s.cpu_weight * 1024 // 100)))
        if "cpuset" in dirs:
            self._copy_cpuset(parents["cpuset"], dirs["cpuset"], s.cpuset)

    def apply_parent(self, parent: Slice) -> None:
        self.ensure_root()
        self._set_limits(self.roots, self.bases, parent)

    def apply(self, slice: Slice) -> None:
        self.ensure_root()
        dirs = self.slice_paths(slice.name)
        for ctrl in self.roots:
            _mkdir(dirs[ctrl])
        self._set_limits(dirs, self.roots, slice)

    def place(self, slice_name: str, pid: int) -> None:
        for ctrl, path in self.slice_paths(slice_name).items():
            if not path.is_dir():
                raise ValueError(f"slice {slice_name!r} does not exist at {path}; apply() it")
            self._ctl(ctrl, path).procs = [pid]

    def _stats(self, name: str, dirs: dict[str, Path]) -> SliceStats:
        st = SliceStats(name=name, path=str(dirs["memory"]), enforced=True)
        mem = MemoryController(Node(str(dirs["memory"])))
        try:
            st.pids = sorted(mem.procs)
            st.memory_current = mem.usage_in_bytes
            st.memory_peak = mem.max_usage_in_bytes
            st.memory_max = _limit(mem.limit_in_bytes)
            st.memory_high = _limit(mem.soft_limit_in_bytes)
            oom = mem.oom_control
            st.oom_kills = oom.get("oom_kill") if isinstance(oom, dict) else None
            stat = mem.stat
            st.memory_anon, st.memory_file = stat.get("total_rss"), stat.get("total_cache")
        except OSError as e:
            log.debug("memory stats for %s: %s", name, e)
        if "cpu" in dirs:
            cpu = CpuController(Node(str(dirs["cpu"])))
            try:
                quota, period = cpu.cfs_quota_us, cpu.cfs_period_us
                st.cpu_quota = None if quota is None or not period else quota / period
                st.cpu_weight = max(1, round(cpu.shares * 100 / 1024))
                idle = _read(dirs["cpu"] / "cpu.idle")
                st.cpu_idle = None if idle is None else idle.strip() == "1"
                stat = cpu.stat
                st.cpu_throttled = int(stat["nr_throttled"])
                st.cpu_throttled_seconds = int(stat["throttled_time"]) / 1e9
            except (OSError, KeyError, ValueError) as e:
                log.debug("cpu stats for %s: %s", name, e)
        if "cpuacct" in dirs:
            try:
                st.cpu_usage_seconds = CpuAcctController(Node(str(dirs["cpuacct"]))).usage / 1e9
            except (OSError, TypeError) as e:
                log.debug("cpuacct stats for %s: %s", name, e)
        return st

    def stats(self, slice_name: str) -> SliceStats:
        return self._stats(slice_name, self.slice_paths(slice_name))

    def parent_stats(self) -> SliceStats:
        return self._stats(self.tree_name, self.roots)

    def remove(self, slice_name: str) -> bool:
        dirs = self.slice_paths(slice_name)
        for ctrl, path in dirs.items():
            if path.is_dir() and self._ctl(ctrl, path).procs:
                return False
        return all([_rmdir(p) for p in dirs.values()])

    def remove_tree(self) -> bool:
        names = {
            p.name for r in self.roots.values() if r.is_dir() for p in r.iterdir() if p.is_dir()
        }
        ok = all([self.remove(n) for n in sorted(names)])
        return ok and all([_rmdir(r) for r in self.roots.values()])


# ---------------------------------------------------------------- cgroup v2


class V2Backend:
    """Unified hierarchy, written as plain files (works on a cgroupfs stand-in in tests)."""

    enforced = True
    reason = ""
    mode = "v2"

    def __init__(self, tree_name: str, base: Path, mount_root: Path) -> None:
        self.tree_name = tree_name
        self.base = base
        self.root = base / tree_name
        self.mount_root = mount_root
        self.enabled: set[str] = set()

    def slice_paths(self, slice_name: str) -> dict[str, Path]:
        return {"unified": self.root / slice_name}

    @staticmethod
    def _write(path: Path, value: object, optional: bool = False) -> None:
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            if not optional:
                raise
            log.debug("skipping %s: %s", path, e)

    @staticmethod
    def _pids(path: Path) -> list[int]:
        text = _read(path / "cgroup.procs") or ""
        return [int(x) for x in text.split()]

    def _available(self, path: Path, fallback: set[str]) -> set[str]:
        text = _read(path / "cgroup.controllers")
        return fallback if text is None else set(text.split())

    def _enable(self, path: Path, available: set[str]) -> set[str]:
        wanted = [c for c in V2_CONTROLLERS if c in available]
        if wanted:
            self._write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        return set(wanted)

    def ensure_root(self) -> None:
        """Delegate: move our cgroup's processes to a leaf, then enable controllers below it."""
        available = self._available(self.base, set())
        if "memory" not in available:
            raise CgroupUnavailable(f"memory controller not available in {self.base}")
        self.root.mkdir(exist_ok=True)
        pids = self._pids(self.base)
        if pids and self.base != self.mount_root:
            # "No internal processes": a cgroup with tasks cannot enable controllers for its
            # children, so park them in a leaf, as systemd does for Delegate=yes units.
            leaf = self.base / manager_leaf(self.tree_name)
            leaf.mkdir(exist_ok=True)
            for pid in pids:
                try:
                    self._write(leaf / "cgroup.procs", pid)
                except ProcessLookupError:
                    pass  # exited meanwhile
        base_enabled = self._enable(self.base, available)
        self.enabled = self._enable(self.root, self._available(self.root, base_enabled))

    def _set_limits(self, path: Path, s: Slice) -> None:
        if "memory" in self.enabled:
            self._write(path / "memory.max", s.memory_max)
            self._write(path / "memory.high", "max" if s.memory_high is None else s.memory_high)
            swap = "max" if s.swap_max is None else s.swap_max
            self._write(path / "memory.swap.max", swap, optional=True)
        if "cpu" in self.enabled:
            quota = "max" if s.cpu_quota is None else int(s.cpu_quota * CFS_PERIOD_US)
            self._write(path / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            _set_weight_and_idle(path / "cpu.idle", s,
                                 lambda: self._write(path / "cpu.weight", s.cpu_weight))
        if "cpuset" in self.enabled:
            cpus = s.cpuset
            if cpus in CPUSET_WORDS:
                effective = _read(path.parent / "cpuset.cpus.effective")
                cpus = resolve_cpus(cpus, parse_cpus(effective) if effective else
                                    os.sched_getaffinity(0))
            self._write(path / "cpuset.cpus", cpus or "", optional=True)

    def apply_parent(self, parent: Slice) -> None:
        self.ensure_root()
        self._set_limits(self.root, parent)

    def apply(self, slice: Slice) -> None:
        if not self.enabled:
            self.ensure_root()
        path = self.root / slice.name
        path.mkdir(exist_ok=True)
        self._set_limits(path, slice)

    def place(self, slice_name: str, pid: int) -> None:
        path = self.root / slice_name
        if not path.is_dir():
            raise ValueError(f"slice {slice_name!r} does not exist at {path}; apply() it")
        self._write(path / "cgroup.procs", pid)

    def _stats(self, name: str, path: Path) -> SliceStats:
        def num(fname: str) -> int | None:
            v = _read(path / fname)
            return int(v) if v and v.isdigit() else None

        def keyed(fname: str, key: str) -> int | None:
            for line in (_read(path / fname) or "").splitlines():
                k, _, v = line.partition(" ")
                if k == key and v.strip().isdigit():
                    return int(v)
            return None

        st = SliceStats(name=name, path=str(path), enforced=True, pids=self._pids(path))
        st.memory_current = num("memory.current")
        st.memory_peak = num("memory.peak")
        st.memory_max = num("memory.max")
        st.memory_high = num("memory.high")
        st.oom_kills = keyed("memory.events", "oom_kill")
        st.memory_anon, st.memory_file = keyed("memory.stat", "anon"), keyed("memory.stat", "file")
        usage = keyed("cpu.stat", "usage_usec")
        st.cpu_usage_seconds = None if usage is None else usage / 1e6
        quota, _, period = (_read(path / "cpu.max") or "").partition(" ")
        if quota.isdigit() and period.strip().isdigit():
            st.cpu_quota = int(quota) / int(period)
        st.cpu_weight = num("cpu.weight")
        idle = num("cpu.idle")
        st.cpu_idle = None if idle is None else idle == 1
        st.cpu_throttled = keyed("cpu.stat", "nr_throttled")
        throttled = keyed("cpu.stat", "throttled_usec")
        st.cpu_throttled_seconds = None if throttled is None else throttled / 1e6
        return st

    def stats(self, slice_name: str) -> SliceStats:
        return self._stats(slice_name, self.root / slice_name)

    def parent_stats(self) -> SliceStats:
        return self._stats(self.tree_name, self.root)

    def remove(self, slice_name: str) -> bool:
        path = self.root / slice_name
        if path.is_dir() and self._pids(path):
            return False
        return _rmdir(path)

    def remove_tree(self) -> bool:
        names = (
            sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        )
        ok = all([self.remove(n) for n in names])
        return ok and _rmdir(self.root)


# ---------------------------------------------------------------- factory


def _open_v1(tree_name: str, mounts: str, own: dict[str, str]) -> V1Backend:
    mnts = v1_mounts(mounts)
    bases: dict[str, Path] = {}
    for ctrl in V1_CONTROLLERS:
        if ctrl not in mnts or ctrl not in own:
            if ctrl in ("memory", "cpu"):
                raise CgroupUnavailable(f"cgroup v1 '{ctrl}' controller is not mounted")
            continue
        base = Path(mnts[ctrl]) / tree_base(own[ctrl], tree_name).lstrip("/")
        if not base.is_dir():
            raise CgroupUnavailable(f"own {ctrl} cgroup {base} not found (foreign namespace?)")
        bases[ctrl] = base
    return V1Backend(tree_name, bases)


def _open_v2(tree_name: str, mounts: str, own: dict[str, str], v2_root: Path | None) -> V2Backend:
    root = v2_root or (Path(m) if (m := v2_mount(mounts)) else None)
    if root is None:
        raise CgroupUnavailable("no cgroup2 filesystem mounted")
    base = root / tree_base(own.get("unified", "/"), tree_name).lstrip("/")
    if not base.is_dir():
        raise CgroupUnavailable(f"own cgroup {base} not found")
    return V2Backend(tree_name, base, root)


def open_backend(
    tree_name: str = "bitdaytrader",
    *,
    mounts_path: str = "/proc/self/mounts",
    proc_cgroup_path: str = "/proc/self/cgroup",
    v2_root: Path | str | None = None,
) -> V1Backend | V2Backend | NullBackend:
    """Detect the cgroup mode, create the project tree root and return a backend.

    ``v2_root`` forces the v2 backend rooted at that directory (tests, unusual mounts). Any
    failure to use cgroups yields a NullBackend and ONE warning instead of an exception.
    """
    backend: V1Backend | V2Backend
    try:
        mounts = Path(mounts_path).read_text()
        own = own_cgroup_paths(Path(proc_cgroup_path).read_text())
        mode = "v2" if v2_root is not None else detect_mode(mounts)
        if mode in ("v1", "hybrid"):
            backend = _open_v1(tree_name, mounts, own)
            backend.mode = mode
        elif mode == "v2":
            backend = _open_v2(tree_name, mounts, own, Path(v2_root) if v2_root else None)
        else:
            raise CgroupUnavailable("no cgroup filesystem is mounted")
        backend.ensure_root()
    except CgroupUnavailable as e:
        reason = str(e)
    except OSError as e:
        reason = f"cannot write cgroups: {e.strerror or e} ({e.filename or mounts_path})"
    else:
        return backend
    log.warning("cgroup limits are NOT enforced: %s", reason)
    return NullBackend(tree_name, reason)
