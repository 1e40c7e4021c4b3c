"""Restart before OOM: a program is restarted gracefully through supervisord (stopProcess —
SIGTERM, then its stopwaitsecs — and startProcess) before the kernel kills it, when

- its slice's process memory has been at or over ``fraction`` × the slice's cap for
  ``samples`` consecutive samples (the biggest running program of the slice is restarted), or
- its own process memory grows steadily and reaches the slice's cap within the leak horizon
  (``LeakDetector``; judged only after the program's first ``leak_grace_s`` seconds).

The figures are the slice's cgroup figures where they are enforced and the programs' RssAnon
where they are not (``services.monitor.sampler``): this is also the enforcement on a machine
whose cgroups cannot be written. Programs in ``never`` (batch jobs) and the monitor itself are
only alerted about; a program restarted is not restarted again within ``cooldown_s``.
"""

from __future__ import annotations

import logging
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from services.monitor.leaks import LeakDetector, LeakReport
from services.monitor.sampler import ProgramSample, Sample, SliceSample
from shared.resources.supervisor import stop_process

log = logging.getLogger("bdt.monitor")
MiB = 1 << 20


@dataclass(frozen=True)
class Restart:
    """A program to restart (or, with ``held`` set, one that would be but may not be)."""

    program: str
    slice: str
    pid: int
    why: str                      # "over_cap_fraction" | "leak"
    message: str
    figures: dict[str, Any]
    held: str = ""                # why it is not restarted ("never_restart", "cooldown", …)


@dataclass
class Verdict:
    restarts: list[Restart] = field(default_factory=list)
    held: list[Restart] = field(default_factory=list)
    leaks: list[LeakReport] = field(default_factory=list)     # warnings: growing, cap far


class OomGuard:
    """Judges each sample; remembers runs over the fraction, cooldowns and warned leaks."""

    def __init__(self, fraction: float, samples: int, cooldown_s: float, never: Iterable[str],
                 leaks: LeakDetector, self_name: str = "monitor", leak_grace_s: float = 0.0
                 ) -> None:
        self.fraction, self.samples, self.cooldown_s = fraction, samples, cooldown_s
        self.leak_grace_s = leak_grace_s
        self.never = set(never) | {self_name}
        self.self_name = self_name
        self.leaks = leaks
        self.over: dict[str, int] = {}              # slice → consecutive samples over
        self.restarted_at: dict[str, float] = {}    # program → when the monitor restarted it
        self.warned: dict[str, int] = {}            # program → pid its leak was warned about
        self.held: dict[str, tuple[int, str]] = {}  # program → (pid, why) last held

    def _hold(self, program: str, now: float) -> str:
        if program == self.self_name:
            return "the monitor does not restart itself"
        if program in self.never:
            return "in monitor.never_restart"
        since = now - self.restarted_at.get(program, -1e18)
        if since < self.cooldown_s:
            return f"restarted {since:.0f} s ago (monitor.restart_cooldown_s " \
                   f"{self.cooldown_s:g})"
        return ""

    def _decide(self, verdict: Verdict, restart: Restart, now: float) -> None:
        held = self._hold(restart.program, now)
        if held:
            if self.held.get(restart.program) != (restart.pid, restart.why):
                self.held[restart.program] = (restart.pid, restart.why)   # once per process
                verdict.held.append(Restart(**{**restart.__dict__, "held": held}))
            return
        self.held.pop(restart.program, None)
        self.restarted_at[restart.program] = now
        self.leaks.forget(restart.program)
        self.over.pop(restart.slice, None)
        verdict.restarts.append(restart)

    def judge(self, sample: Sample, busy: Callable[[str], bool] = lambda p: False) -> Verdict:
        """What to do after ``sample``; ``busy(program)``: a restart of it is under way."""
        verdict = Verdict()
        now = sample.ts
        running = {n: p for n, p in sample.programs.items()
                   if p.pid is not None and p.memory_process is not None and not busy(n)}
        for p in running.values():
            if p.uptime_s >= self.leak_grace_s:      # start-up growth is not a leak
                self.leaks.add(p.program, p.pid, now, p.memory_process)  # type: ignore[arg-type]
        for name, sl in sample.slices.items():
            members = [p for p in running.values() if p.slice == name]
            fraction = sl.fraction_of_cap
            if fraction is None or fraction < self.fraction or not members:
                self.over.pop(name, None)
                continue
            self.over[name] = self.over.get(name, 0) + 1
            if self.over[name] < self.samples:
                continue
            biggest = max(members, key=lambda p: p.memory_process or 0)
            self._decide(verdict, self._over_fraction(sl, biggest), now)
        for p in running.values():
            sl = sample.slices.get(p.slice or "")
            report = self.leaks.check(p.program, sl.memory_process if sl else None,
                                      sl.cap_bytes if sl else None, now)
            if report is None or any(r.program == p.program for r in verdict.restarts):
                continue
            if report.severity == "critical":
                self._decide(verdict, self._leak(report, p), now)
            elif self.warned.get(p.program) != p.pid:
                self.warned[p.program] = p.pid    # a warning once per process, not per sample
                verdict.leaks.append(report)
        return verdict

    def _over_fraction(self, sl: SliceSample, p: ProgramSample) -> Restart:
        used = sl.memory_process or 0
        message = (f"slice {sl.slice}: process memory {used / MiB:.0f} MiB ≥ "
                   f"{self.fraction:.0%} of its cap {sl.cap_bytes / MiB:.0f} MiB for "
                   f"{self.samples} samples ({sl.source}); restarting {p.program} "
                   f"({(p.memory_process or 0) / MiB:.0f} MiB) before the kernel kills it")
        figures = {"pid": p.pid, "slice_memory_bytes": used, "cap_bytes": sl.cap_bytes,
                   "program_memory_bytes": p.memory_process, "fraction": round(used /
                                                                                sl.cap_bytes, 3),
                   "source": sl.source}
        return Restart(p.program, sl.slice, p.pid or 0, "over_cap_fraction", message, figures)

    def _leak(self, report: LeakReport, p: ProgramSample) -> Restart:
        message = (f"{p.program}: process memory grows {report.growth_mib_per_h:.0f} MiB/h "
                   f"(R² {report.r2:.2f} over {report.window_s:.0f} s) and reaches its slice's "
                   f"cap in {report.eta_s or 0:.0f} s; restarting it before the kernel kills it")
        return Restart(p.program, p.slice or "", p.pid or 0, "leak", message, report.figures())


@dataclass(frozen=True)
class RestartResult:
    program: str
    action: str                   # "restart" | "stop"
    ok: bool
    error: str
    seconds: float


class Restarter:
    """Restarts programs through supervisord's XML-RPC, each in a thread of its own (a stop
    waits up to the program's stopwaitsecs; the monitor keeps sampling meanwhile).
    ``connect()`` returns a fresh ServerProxy (``shared.resources.supervisor.connect``)."""

    def __init__(self, connect: Callable[[], Any], group: str) -> None:
        self.connect, self.group = connect, group
        self.threads: dict[str, threading.Thread] = {}
        self.done: list[RestartResult] = []
        self._lock = threading.Lock()

    def busy(self, program: str) -> bool:
        thread = self.threads.get(program)
        return thread is not None and thread.is_alive()

    def start(self, program: str, action: str = "restart") -> bool:
        """Begin restarting (or with ``action`` "stop", stopping) ``program``; False when
        something is already under way for it."""
        if self.busy(program):
            return False
        thread = threading.Thread(target=self._run, args=(program, action),
                                  name=f"{action}-{program}", daemon=True)
        self.threads[program] = thread
        thread.start()
        return True

    def _run(self, program: str, action: str) -> None:
        name, started, error = f"{self.group}:{program}", time.monotonic(), ""
        try:
            rpc = self.connect()
            stop_process(rpc, name)
            if action == "restart":
                rpc.supervisor.startProcess(name, True)
        except (OSError, xmlrpc.client.Error) as exc:
            error = str(exc)
        with self._lock:
            self.done.append(RestartResult(program, action, not error, error,
                                           time.monotonic() - started))

    def results(self) -> list[RestartResult]:
        """Restarts finished since the last call."""
        with self._lock:
            out, self.done = self.done, []
        return out

    def join(self, timeout: float = 15.0) -> None:
        """Wait for restarts under way (at shutdown)."""
        for thread in list(self.threads.values()):
            thread.join(timeout)
