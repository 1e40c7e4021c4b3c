"""The resource mode (seed 000 §7.2): normal | low_resource | critical, from the whole tree's
process memory and CPU use against thresholds, with hysteresis so it does not flap.

A level is *entered* after ``enter_samples`` consecutive samples at or over its threshold
(memory or CPU, whichever is higher), and *left* only after ``exit_samples`` consecutive
samples under its threshold × (1 − ``hysteresis``). A series hovering at a threshold therefore
changes the mode once, not at every sample. ``Latch`` is the same rule for one figure and one
threshold (the high_memory and high_cpu alerts).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import Config, ConfigError
from shared.protocol.events import MODES

MiB = 1 << 20


def gib(n: float) -> str:
    return f"{n / (1 << 30):.2f} GiB"


@dataclass(frozen=True)
class Thresholds:
    """Where each mode starts. Memory in bytes (the tree's process memory), CPU in % of the
    tree's CPU quota; ``hysteresis`` a fraction in [0, 1)."""

    low_memory: int
    critical_memory: int
    low_cpu_pct: float
    critical_cpu_pct: float
    hysteresis: float = 0.1
    enter_samples: int = 2
    exit_samples: int = 6

    def __post_init__(self) -> None:
        if not self.low_memory < self.critical_memory:
            raise ConfigError(f"monitor.low_memory_mb ({self.low_memory // MiB}) must be below "
                              f"monitor.critical_memory_mb ({self.critical_memory // MiB})")
        if not self.low_cpu_pct < self.critical_cpu_pct:
            raise ConfigError(f"monitor.low_cpu_pct ({self.low_cpu_pct:g}) must be below "
                              f"monitor.critical_cpu_pct ({self.critical_cpu_pct:g})")

    @classmethod
    def from_config(cls, cfg: Config) -> Thresholds:
        """ConfigError when low is not below critical."""
        m = cfg.section("monitor")
        return cls(m["low_memory_mb"] * MiB, m["critical_memory_mb"] * MiB, m["low_cpu_pct"],
                   m["critical_cpu_pct"], m["hysteresis"], m["enter_samples"], m["exit_samples"])

    def level(self, memory: int | None, cpu_pct: float | None, scale: float = 1.0
              ) -> tuple[int, str]:
        """(index into MODES, why) for these figures against the thresholds × ``scale``."""
        level, why = 0, ""
        for index, mem_at, cpu_at in ((1, self.low_memory, self.low_cpu_pct),
                                      (2, self.critical_memory, self.critical_cpu_pct)):
            if memory is not None and memory >= mem_at * scale:
                level, why = index, f"memory {gib(memory)} ≥ {gib(mem_at * scale)}"
            elif cpu_pct is not None and cpu_pct >= cpu_at * scale:
                level, why = index, f"CPU {cpu_pct:.0f}% ≥ {cpu_at * scale:.0f}% of the " \
                                    "tree's quota"
        return level, why

    def as_dict(self) -> dict[str, float | int]:
        return {"low_memory_bytes": self.low_memory, "critical_memory_bytes": self.critical_memory,
                "low_cpu_pct": self.low_cpu_pct, "critical_cpu_pct": self.critical_cpu_pct,
                "hysteresis": self.hysteresis, "enter_samples": self.enter_samples,
                "exit_samples": self.exit_samples}


@dataclass(frozen=True)
class ModeChange:
    old: str
    new: str
    reason: str
    memory_bytes: int | None
    cpu_pct: float | None
    ts: float


class ModeMachine:
    """Feed it one sample's figures at a time; it says when the mode changes."""

    def __init__(self, thresholds: Thresholds, now: float = 0.0) -> None:
        self.t = thresholds
        self.level = 0
        self.since = now
        self.reason = "start"
        self._up: list[int] = []       # levels of the consecutive samples over the current one
        self._down: list[int] = []     # levels to keep of the consecutive samples under it

    @property
    def mode(self) -> str:
        return MODES[self.level]

    def update(self, memory: int | None, cpu_pct: float | None, now: float) -> ModeChange | None:
        """The change this sample completes, or None."""
        level, why = self.t.level(memory, cpu_pct)
        keep, _ = self.t.level(memory, cpu_pct, 1.0 - self.t.hysteresis)
        self._up = self._up + [level] if level > self.level else []
        self._down = self._down + [keep] if keep < self.level else []
        new, reason = self.level, ""
        if len(self._up) >= self.t.enter_samples:
            new = min(self._up[-self.t.enter_samples:])
            reason = f"{why} for {self.t.enter_samples} samples"
        elif len(self._down) >= self.t.exit_samples:
            new = max(self._down[-self.t.exit_samples:])
            figures = f"memory {gib(memory or 0)}" + (
                "" if cpu_pct is None else f", CPU {cpu_pct:.0f}%")
            reason = f"{figures}: under the {MODES[self.level]} thresholds less " \
                     f"{self.t.hysteresis:.0%} for {self.t.exit_samples} samples"
        if new == self.level:
            return None
        change = ModeChange(MODES[self.level], MODES[new], reason, memory, cpu_pct, now)
        self.level, self.since, self.reason = new, now, reason
        self._up, self._down = [], []
        return change


class Latch:
    """One figure against one threshold with the mode's hysteresis: ``update`` returns
    "rose" once when it has been at or over the threshold for ``enter`` samples, and "fell"
    once when it has been under threshold × (1 − hysteresis) for ``exit`` samples."""

    def __init__(self, threshold: float, hysteresis: float, enter: int, exit: int) -> None:
        self.threshold, self.hysteresis, self.enter, self.exit = threshold, hysteresis, enter, exit
        self.high = False
        self._run = 0

    def update(self, value: float | None) -> str | None:
        if value is None:
            return None
        if not self.high:
            self._run = self._run + 1 if value >= self.threshold else 0
            if self._run >= self.enter:
                self.high, self._run = True, 0
                return "rose"
        else:
            self._run = self._run + 1 if value < self.threshold * (1 - self.hysteresis) else 0
            if self._run >= self.exit:
                self.high, self._run = False, 0
                return "fell"
        return None
