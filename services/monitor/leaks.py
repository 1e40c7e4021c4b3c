"""Leak detection (seed 001, MemoryMonitor.detect_memory_leak → LeakReport): a program whose
process memory grows steadily — the least-squares slope of its RssAnon over a sliding window
is at least ``min_mib_per_h`` and the line fits (R² ≥ ``min_r2``) — is reported with its
growth rate and the time left until its slice's cap at that rate.

Start-up growth (imports, a model loaded) is a step, not a line: over a full window its R² is
low. Only a window that spans at least 90 % of ``window_s`` with ``min_samples`` points is
judged, and the series restarts with each new pid.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

MiB = 1 << 20


def least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope in y-units per x-unit, R²) of the least-squares line through ``points``.
    R² is 0 for a flat series (nothing explained) and for fewer than 3 points."""
    n = len(points)
    if n < 3:
        return 0.0, 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    syy = sum((y - my) ** 2 for _, y in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    if sxx == 0:
        return 0.0, 0.0
    slope = sxy / sxx
    r2 = 0.0 if syy == 0 else (sxy * sxy) / (sxx * syy)
    return slope, r2


@dataclass(frozen=True)
class LeakReport:
    """Seed 001's LeakReport for one program. ``growth_mib_per_h``: the slope; ``eta_s``:
    seconds until its slice's process memory reaches the cap at that rate (None without a
    cap); ``severity`` "critical" when that is within the horizon (restart), else "warning".
    Which objects leak is not known from outside the process (seed 001's suspected_objects
    and stack_trace): the report names the program and its figures."""

    program: str
    pid: int
    detected_at: float                 # epoch s
    growth_mib_per_h: float
    r2: float
    window_s: float
    samples: int
    memory_bytes: int                  # the program's process memory now
    slice_memory_bytes: int | None     # its slice's process memory now
    cap_bytes: int | None
    eta_s: float | None
    severity: str

    def figures(self) -> dict[str, float | int | None]:
        return {"pid": self.pid, "growth_mib_per_h": round(self.growth_mib_per_h, 1),
                "r2": round(self.r2, 3), "window_s": round(self.window_s, 1),
                "samples": self.samples, "memory_bytes": self.memory_bytes,
                "slice_memory_bytes": self.slice_memory_bytes, "cap_bytes": self.cap_bytes,
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}


class LeakDetector:
    """One sliding window of (t, bytes) per program; ``check`` judges it."""

    def __init__(self, window_s: float, min_samples: int, min_mib_per_h: float, min_r2: float,
                 horizon_s: float) -> None:
        self.window_s, self.min_samples = window_s, min_samples
        self.min_rate = min_mib_per_h * MiB / 3600.0          # bytes per second
        self.min_r2, self.horizon_s = min_r2, horizon_s
        self.series: dict[str, collections.deque[tuple[float, float]]] = {}
        self.pids: dict[str, int] = {}

    def add(self, program: str, pid: int, t: float, memory_bytes: int) -> None:
        """One point; a new pid starts the program's series afresh."""
        if self.pids.get(program) != pid:
            self.pids[program] = pid
            self.series[program] = collections.deque()
        points = self.series[program]
        points.append((t, float(memory_bytes)))
        while points and points[0][0] < t - self.window_s:
            points.popleft()

    def forget(self, program: str) -> None:
        self.series.pop(program, None)
        self.pids.pop(program, None)

    def check(self, program: str, slice_memory: int | None, cap: int | None, now: float
              ) -> LeakReport | None:
        """A report when the program's window shows a leak, else None."""
        points = self.series.get(program)
        if not points or len(points) < self.min_samples:
            return None
        span = points[-1][0] - points[0][0]
        if span < 0.9 * self.window_s:
            return None
        t0 = points[0][0]
        slope, r2 = least_squares([(t - t0, y) for t, y in points])
        if slope < self.min_rate or r2 < self.min_r2:
            return None
        eta = None
        if cap:
            used = slice_memory if slice_memory is not None else points[-1][1]
            eta = max(0.0, (cap - used) / slope)
        severity = "critical" if eta is not None and eta <= self.horizon_s else "warning"
        return LeakReport(program, self.pids[program], now, slope * 3600 / MiB, r2, span,
                          len(points), int(points[-1][1]), slice_memory, cap, eta, severity)
