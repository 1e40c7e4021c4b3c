"""One sample of the whole stack: every slice of the allocation table (through
``shared.resources.cgexec.slice_report``), every program of supervisord's table, and the
machine's pressure.

"Process memory" is what the kernel's cap is about: anonymous memory, without page cache
(files read or written, which the kernel reclaims before it kills anything). For a slice it is
the cgroup's ``memory_anon`` when the slice is enforced — its figures are known and every
running program of the slice is inside it; otherwise (cgroups not writable, a program that
could not be placed) it is the sum of its programs' RssAnon (psutil ``rss − shared``, their
descendants included), and the slice's ``source`` says "rss". The whole tree's figure adds the
RssAnon of programs outside their slice to the tree's own.

CPU is the use over the last interval, in cores, from the cumulative counters (the cgroup's
``cpuacct``/``cpu.stat``, else the programs' CPU times).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from services.monitor.psi import cgroup_pressure, host_pressure
from shared.resources.allocation import AllocationTable
from shared.resources.cgexec import slice_report
from shared.resources.processes import process_figures

log = logging.getLogger("bdt.monitor")

Pressure = dict[str, dict[str, float] | None]


@dataclass
class SliceSample:
    """One slice (or the tree) at one instant. Bytes, cores, seconds; None = unknown."""

    slice: str
    programs: tuple[str, ...]
    source: str                        # "cgroup" (kernel figures) | "rss" (programs' RssAnon)
    cap_bytes: int
    memory_process: int | None         # anonymous memory: what the cap is about
    memory_page_cache: int | None      # reclaimable file pages (cgroup only)
    memory_peak: int | None            # the cgroup's high-water mark (cgroup only)
    oom_kills: int | None              # cumulative OOM kills in the slice (cgroup only)
    cpu_seconds: float | None          # cumulative CPU time
    cpu_cores: float | None            # CPU use over the last interval, in cores
    cpu_quota: float | None            # cores (None = no quota)
    cpu_throttled: int | None          # cumulative quota periods throttled
    cpu_throttled_seconds: float | None
    pressure: Pressure = field(default_factory=dict)

    @property
    def fraction_of_cap(self) -> float | None:
        if self.memory_process is None or not self.cap_bytes:
            return None
        return self.memory_process / self.cap_bytes


@dataclass
class ProgramSample:
    """One program of supervisord's table. ``confined``: its pid is inside its slice."""

    program: str
    slice: str | None
    state: str                         # supervisord's state name (RUNNING, STOPPED, EXITED …)
    pid: int | None
    uptime_s: float
    memory_process: int | None         # RssAnon of the process and its descendants, bytes
    cpu_seconds: float | None          # user + system of the process and its descendants
    cpu_cores: float | None
    confined: bool
    restarts: int                      # pid changes seen by the monitor since it started
    exit_status: int | None
    spawn_error: str | None


@dataclass
class Sample:
    """The whole stack at one instant (``ts``: epoch s)."""

    ts: float
    interval_s: float | None           # since the previous sample
    enforced: bool                     # cgroups readable and every running program in its slice
    cgroup_mode: str
    cgroup_reason: str                 # why not enforced ("" when enforced)
    tree: SliceSample
    slices: dict[str, SliceSample]
    programs: dict[str, ProgramSample]
    host_pressure: Pressure
    supervisor_error: str | None
    cost_s: float = 0.0                # CPU time this sample took the monitor

    @property
    def memory_bytes(self) -> int:
        """The tree's process memory (what the modes are judged on)."""
        return self.tree.memory_process or 0

    @property
    def cpu_pct(self) -> float | None:
        """The tree's CPU use over the last interval, in % of its quota (or of the machine)."""
        if self.tree.cpu_cores is None:
            return None
        quota = self.tree.cpu_quota or float(psutil.cpu_count() or 1)
        return 100.0 * self.tree.cpu_cores / quota

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["memory_bytes"], d["cpu_pct"] = self.memory_bytes, self.cpu_pct
        return d


class Sampler:
    """Takes samples; keeps the previous counters so CPU use is per interval.

    ``processes`` returns supervisord's table (``shared.resources.supervisor.process_table``)
    and raises OSError when supervisord is unreachable; ``proc_root`` is /proc (tests point it
    at a stand-in for host pressure)."""

    def __init__(self, cfg: Any, table: AllocationTable, backend: Any,
                 processes: Callable[[], list[dict[str, Any]]],
                 proc_root: Path = Path("/proc")) -> None:
        self.cfg, self.table, self.backend, self.processes = cfg, table, backend, processes
        self.proc_root = proc_root
        self.prev_ts: float | None = None
        self.prev_cpu: dict[str, float] = {}      # "slice:x" / "program:x" → CPU seconds
        self.pids: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self._touched: set[str] = set()

    def _cores(self, key: str, seconds: float | None, dt: float | None) -> float | None:
        """Cores used since the previous sample by the counter ``key`` (None the first time,
        after a reset, or when unknown)."""
        self._touched.add(key)
        prev = self.prev_cpu.get(key)
        if seconds is None:
            self.prev_cpu.pop(key, None)
            return None
        self.prev_cpu[key] = seconds
        if prev is None or not dt or seconds < prev:
            return None
        return (seconds - prev) / dt

    def _programs(self, dt: float | None) -> tuple[dict[str, ProgramSample], str | None]:
        try:
            rows = self.processes()
            error = None
        except OSError as exc:
            rows, error = [], f"supervisord not reachable: {exc}"
        out: dict[str, ProgramSample] = {}
        for info in rows:
            name = info["name"]
            try:
                slice_name: str | None = self.table.slice_for_program(name).name
            except ValueError:
                slice_name = None
            running = info["statename"] == "RUNNING" and bool(info.get("pid"))
            pid = int(info["pid"]) if running else None
            if pid is not None:
                if name in self.pids and self.pids[name] != pid:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                self.pids[name] = pid
            memory, cpu = process_figures(pid) if pid is not None else (None, None)
            out[name] = ProgramSample(
                program=name, slice=slice_name, state=info["statename"], pid=pid,
                uptime_s=float(info["now"] - info["start"]) if running else 0.0,
                memory_process=memory, cpu_seconds=cpu,
                cpu_cores=self._cores(f"program:{name}:{pid}", cpu, dt),
                confined=False, restarts=self.restarts.get(name, 0),
                exit_status=info.get("exitstatus"), spawn_error=info.get("spawnerr") or None)
        return out, error

    def _slice(self, row: dict[str, Any], programs: list[ProgramSample], dt: float | None,
               dirs: dict[str, Path]) -> SliceSample:
        running = [p for p in programs if p.pid is not None]
        pids = set(row.get("pids") or ())
        for p in running:
            p.confined = row["memory_anon"] is not None and p.pid in pids
        if row["memory_anon"] is not None and all(p.confined for p in running):
            source, memory, cpu = "cgroup", row["memory_anon"], row["cpu_usage_seconds"]
        else:
            source = "rss"
            memory = sum(p.memory_process or 0 for p in running)
            cpu = sum(p.cpu_seconds or 0.0 for p in running) if running else None
        quota = row["cpu_quota"] if row["cpu_quota"] is not None else row["table_cpu_quota"]
        return SliceSample(
            slice=row["slice"], programs=tuple(row["programs"]), source=source,
            cap_bytes=row["cap_bytes"], memory_process=memory,
            memory_page_cache=row["memory_file"] if source == "cgroup" else None,
            memory_peak=row["memory_peak"], oom_kills=row["oom_kills"], cpu_seconds=cpu,
            cpu_cores=self._cores(f"slice:{row['slice']}:{source}", cpu, dt), cpu_quota=quota,
            cpu_throttled=row["cpu_throttled"],
            cpu_throttled_seconds=row["cpu_throttled_seconds"],
            pressure=cgroup_pressure(dirs) if dirs else {})

    def _tree(self, row: dict[str, Any], programs: dict[str, ProgramSample], dt: float | None
              ) -> SliceSample:
        """The tree's figures plus those of running programs outside it (unconfined)."""
        outside = [p for p in programs.values() if p.pid is not None and not p.confined]
        if row["memory_anon"] is None:
            memory = sum(p.memory_process or 0 for p in outside)
            cpu: float | None = sum(p.cpu_seconds or 0.0 for p in outside)
            source = "rss"
        else:
            memory = row["memory_anon"] + sum(p.memory_process or 0 for p in outside)
            cpu = None if row["cpu_usage_seconds"] is None else \
                row["cpu_usage_seconds"] + sum(p.cpu_seconds or 0.0 for p in outside)
            source = "cgroup" if not outside else "cgroup+rss"
        # the CPU of programs that come and go outside the tree makes the sum jump: per pid set
        key = f"tree:{source}:{','.join(sorted(str(p.pid) for p in outside))}"
        quota = row["cpu_quota"] if row["cpu_quota"] is not None else row["table_cpu_quota"]
        return SliceSample(
            slice=row["slice"], programs=tuple(programs), source=source,
            cap_bytes=row["cap_bytes"], memory_process=memory,
            memory_page_cache=row["memory_file"], memory_peak=row["memory_peak"],
            oom_kills=row["oom_kills"], cpu_seconds=cpu, cpu_cores=self._cores(key, cpu, dt),
            cpu_quota=quota, cpu_throttled=row["cpu_throttled"],
            cpu_throttled_seconds=row["cpu_throttled_seconds"],
            pressure=cgroup_pressure(self.backend.tree_paths()))

    def sample(self) -> Sample:
        """Read everything once; never raises for a program or slice that is gone."""
        cost0 = time.process_time()
        now, mono = time.time(), time.monotonic()
        dt = None if self.prev_ts is None else mono - self.prev_ts
        self.prev_ts = mono
        programs, supervisor_error = self._programs(dt)
        report = slice_report(self.cfg, self.table, self.backend)
        rows = report["slices"]
        slices: dict[str, SliceSample] = {}
        for row in rows[1:]:
            members = [p for p in programs.values() if p.slice == row["slice"]]
            dirs = self.backend.slice_paths(row["slice"]) if report["enforced"] else {}
            slices[row["slice"]] = self._slice(row, members, dt, dirs)
        tree = self._tree(rows[0], programs, dt)
        outside = sorted(n for n, p in programs.items() if p.pid is not None and not p.confined)
        enforced, reason = report["enforced"] and not outside, report["reason"]
        if report["enforced"] and outside:
            reason = f"not in their slice (cgroups not writable when they started?): " \
                     f"{', '.join(outside)}"
        sample = Sample(ts=now, interval_s=dt, enforced=enforced,
                        cgroup_mode=report["mode"], cgroup_reason=reason, tree=tree,
                        slices=slices, programs=programs,
                        host_pressure=host_pressure(self.proc_root),
                        supervisor_error=supervisor_error)
        for gone in set(self.prev_cpu) - self._touched:     # pids that ended, slices renamed
            del self.prev_cpu[gone]
        self._touched.clear()
        sample.cost_s = time.process_time() - cost0
        return sample
