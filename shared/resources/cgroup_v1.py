"""cgroup v1 (legacy and hybrid hierarchies): one directory per controller mount, written
through cgroupspy. The project tree hangs from the caller's own cgroup in each hierarchy."""

from __future__ import annotations

import logging
from pathlib import Path

from cgroupspy.controllers import (
    Controller,
    CpuAcctController,
    CpuController,
    CpuSetController,
    MemoryController,
)
from cgroupspy.nodes import Node

from shared.resources.allocation import Slice
from shared.resources.cgroup import (
    CFS_PERIOD_US,
    UNLIMITED,
    SliceStats,
    limit_or_none,
    make_dir,
    read_value,
    remove_dir,
    resolve_cpus,
    set_weight_and_idle,
)

log = logging.getLogger("bdt.cgroup")

_V1_CLASSES: dict[str, type[Controller]] = {
    "memory": MemoryController,
    "cpu": CpuController,
    "cpuacct": CpuAcctController,
    "cpuset": CpuSetController,
}


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
        """A slice's directory under each controller's hierarchy."""
        return {c: r / slice_name for c, r in self.roots.items()}

    def tree_paths(self) -> dict[str, Path]:
        """The tree root's directory under each controller's hierarchy."""
        return dict(self.roots)

    def ensure_root(self) -> None:
        """mkdir the tree root in every hierarchy; roll back what we made if one fails."""
        made: list[Path] = []
        try:
            for ctrl, base in self.bases.items():
                root = self.roots[ctrl]
                if not make_dir(root):
                    continue  # already there (another program's cgexec may race us)
                made.append(root)
                if ctrl == "memory":
                    self._use_hierarchy(root)
                if ctrl == "cpuset":
                    self._copy_cpuset(base, root, None)
        except OSError:
            for path in reversed(made):
                remove_dir(path)
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
            if memsw is None or s.memory_max > (mem.memsw_limit_in_bytes or UNLIMITED):
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
            set_weight_and_idle(dirs["cpu"] / "cpu.idle", s,
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
            make_dir(dirs[ctrl])
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
            st.memory_max = limit_or_none(mem.limit_in_bytes)
            st.memory_high = limit_or_none(mem.soft_limit_in_bytes)
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
                idle = read_value(dirs["cpu"] / "cpu.idle")
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
        return all([remove_dir(p) for p in dirs.values()])

    def remove_tree(self) -> bool:
        names = {
            p.name for r in self.roots.values() if r.is_dir() for p in r.iterdir() if p.is_dir()
        }
        ok = all([self.remove(n) for n in sorted(names)])
        return ok and all([remove_dir(r) for r in self.roots.values()])


