"""cgroup v2 (the unified hierarchy), written as plain files — so it also runs on a directory
tree that mimics cgroupfs, which is how it is tested on a machine without a writable v2."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from shared.resources.allocation import CPUSET_WORDS, Slice
from shared.resources.cgroup import (
    CFS_PERIOD_US,
    V2_CONTROLLERS,
    CgroupUnavailable,
    SliceStats,
    manager_leaf,
    parse_cpus,
    read_keyed,
    read_value,
    remove_dir,
    resolve_cpus,
    set_weight_and_idle,
)

log = logging.getLogger("bdt.cgroup")


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
        """A slice's directory in the unified hierarchy."""
        return {"unified": self.root / slice_name}

    def tree_paths(self) -> dict[str, Path]:
        """The tree root's directory in the unified hierarchy."""
        return {"unified": self.root}

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
        text = read_value(path / "cgroup.procs") or ""
        return [int(x) for x in text.split()]

    def _available(self, path: Path, fallback: set[str]) -> set[str]:
        text = read_value(path / "cgroup.controllers")
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
            set_weight_and_idle(path / "cpu.idle", s,
                                 lambda: self._write(path / "cpu.weight", s.cpu_weight))
        if "cpuset" in self.enabled:
            cpus = s.cpuset
            if cpus in CPUSET_WORDS:
                effective = read_value(path.parent / "cpuset.cpus.effective")
                cpus = resolve_cpus(cpus, parse_cpus(effective) if effective else
                                    os.sched_getaffinity(0))
            self._write(path / "cpuset.cpus", cpus or "", optional=True)

    def apply_parent(self, parent: Slice) -> None:
        if not self.enabled:
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
            v = read_value(path / fname)
            return int(v) if v and v.isdigit() else None

        st = SliceStats(name=name, path=str(path), enforced=True, pids=self._pids(path))
        st.memory_current = num("memory.current")
        st.memory_peak = num("memory.peak")
        st.memory_max = num("memory.max")
        st.memory_high = num("memory.high")
        memory, cpu = read_keyed(path / "memory.stat"), read_keyed(path / "cpu.stat")
        st.oom_kills = read_keyed(path / "memory.events").get("oom_kill")
        st.memory_anon, st.memory_file = memory.get("anon"), memory.get("file")
        usage = cpu.get("usage_usec")
        st.cpu_usage_seconds = None if usage is None else usage / 1e6
        quota, _, period = (read_value(path / "cpu.max") or "").partition(" ")
        if quota.isdigit() and period.strip().isdigit():
            st.cpu_quota = int(quota) / int(period)
        st.cpu_weight = num("cpu.weight")
        idle = num("cpu.idle")
        st.cpu_idle = None if idle is None else idle == 1
        st.cpu_throttled = cpu.get("nr_throttled")
        throttled = cpu.get("throttled_usec")
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
        return remove_dir(path)

    def remove_tree(self) -> bool:
        names = (
            sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        )
        ok = all([self.remove(n) for n in names])
        return ok and remove_dir(self.root)


