"""Memory discipline for batch jobs (seeds 001 and 003): a managed-processing context around each
job — peak memory from the cgroup, cleanup handlers run on every exit path — and chunk sizes
that adapt to what is left under the slice's cap, so a big range finishes slower instead of
being OOM-killed; where shrinking cannot help, ``MemoryExhausted`` says what was tried.

Where the process sits in a cgroup with a memory limit (the batch slice), "left" is the limit
less the slice's process memory (page cache is reclaimed before anything is killed) and the
peak is the slice's; without one, "left" is what the machine has available and the figures are
the process's own.
"""

from __future__ import annotations

import gc
import logging
import resource
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil

from shared.resources.cgroup import (
    limit_or_none,
    own_cgroup_paths,
    read_keyed,
    read_value,
    reset_v1_peak,
    v1_mounts,
    v2_mount,
)

log = logging.getLogger("bdt.batch.memory")


class MemoryExhausted(RuntimeError):
    """Not enough memory left for even the smallest chunk; the message says what was tried."""


def _read_int(path: Path) -> int | None:
    text = read_value(path)
    return int(text) if text and text.isdigit() else None


class SliceMemory:
    """The memory figures of the cgroup this process is in (v1 or v2), read fresh each call."""

    def __init__(self, proc_cgroup: str = "/proc/self/cgroup",
                 mounts: str = "/proc/self/mounts") -> None:
        self.dir: Path | None = None
        self.v2 = False
        try:
            own = own_cgroup_paths(Path(proc_cgroup).read_text())
            text = Path(mounts).read_text()
        except OSError:
            return
        v1 = v1_mounts(text)
        if "memory" in v1 and "memory" in own:
            self.dir = Path(v1["memory"]) / own["memory"].lstrip("/")
        elif (root := v2_mount(text)) is not None and "unified" in own:
            self.dir, self.v2 = Path(root) / own["unified"].lstrip("/"), True

    def limit(self) -> int | None:
        """The cap in bytes, None when there is none (or no cgroup)."""
        if self.dir is None:
            return None
        value = _read_int(self.dir / ("memory.max" if self.v2 else "memory.limit_in_bytes"))
        return limit_or_none(value)

    def process_bytes(self) -> int:
        """The slice's process memory (anon) under a cap; else this process's RSS (an uncapped
        cgroup may hold anything else the user runs)."""
        if self.dir is not None and self.limit() is not None:
            value = read_keyed(self.dir / "memory.stat").get("anon" if self.v2 else "total_rss")
            if value is not None:
                return value
        return psutil.Process().memory_info().rss

    def peak(self) -> int:
        """The slice's peak usage under a cap; else this process's peak RSS. Bytes."""
        if self.dir is not None and self.limit() is not None:
            value = _read_int(self.dir / ("memory.peak" if self.v2 else
                                          "memory.max_usage_in_bytes"))
            if value is not None:
                return value
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def reset_peak(self) -> None:
        """Restart the slice's peak (cgroup v1; v2's memory.peak cannot be reset — there the
        peak is the slice's since it was made). Only under a cap: the slice is this job's."""
        if self.dir is not None and not self.v2 and self.limit() is not None:
            reset_v1_peak(self.dir)

    def left(self) -> int:
        """Bytes that may still be allocated before the cap (or what the machine has)."""
        limit = self.limit()
        if limit is None:
            return psutil.virtual_memory().available
        return max(0, limit - self.process_bytes())


class ChunkSizer:
    """How many bars the next chunk may hold: ``fraction`` of what is left, at the observed
    bytes per bar, between ``min_bars`` and ``max_bars``. Shrinks as memory runs low; raises
    MemoryExhausted below ``min_bars`` (after a garbage collection and one more look)."""

    def __init__(self, memory: SliceMemory, max_bars: int, min_bars: int,
                 bytes_per_bar: float, fraction: float = 0.5) -> None:
        self.memory, self.max_bars, self.min_bars = memory, max_bars, min_bars
        self.bytes_per_bar, self.fraction = bytes_per_bar, fraction
        self.sizes: list[int] = []

    def next(self, halve: bool = False) -> int:
        """The next chunk's bars (recorded in ``sizes``); ``halve``: half of that, not below
        ``min_bars`` (the monitor's low-resource mode asks batch jobs to shrink)."""
        for attempt in range(2):
            left = self.memory.left()
            bars = min(self.max_bars, int(left * self.fraction / self.bytes_per_bar))
            if bars >= self.min_bars:
                bars = max(self.min_bars, bars // 2) if halve else bars
                if self.sizes and bars < self.sizes[-1]:
                    log.info("chunk shrinks to %d bars: %d MiB left under the cap", bars,
                             left >> 20)
                self.sizes.append(bars)
                return bars
            if attempt == 0:
                gc.collect()
        raise MemoryExhausted(
            f"{left >> 20} MiB left under the cap ({(self.memory.limit() or 0) >> 20} MiB) is "
            f"too little for a chunk of {self.min_bars} bars at ~{self.bytes_per_bar:.0f} bytes "
            f"a bar; chunks tried: {self.sizes[-5:] or 'none'}. Give the batch slice more memory "
            "or run a shorter range.")

    def observe(self, bars: int, grew_bytes: int) -> None:
        """What a chunk of ``bars`` bars really cost: the estimate only ever rises (a chunk that
        reused freed memory measures low, and trusting it made the next chunk overshoot)."""
        if bars > 0 and grew_bytes > 0:
            self.bytes_per_bar = max(self.bytes_per_bar, grew_bytes / bars)


class ManagedJob:
    """A batch job's lifetime: cleanup handlers run on every exit path, in reverse order, and
    the peak memory and cap are logged and kept (``peak_bytes``, ``cap_bytes``)."""

    def __init__(self, name: str, memory: SliceMemory | None = None) -> None:
        self.name = name
        self.memory = memory or SliceMemory()
        self._cleanups: list[Callable[[], None]] = []
        self.peak_bytes = 0
        self.cap_bytes = self.memory.limit()

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def __enter__(self) -> ManagedJob:
        self.memory.reset_peak()          # the peak reported is this job's
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception:
                log.exception("%s: a cleanup handler failed", self.name)
        gc.collect()
        self.peak_bytes = self.memory.peak()
        log.info("%s %s: peak %d MiB of %s", self.name, "failed" if exc else "done",
                 self.peak_bytes >> 20,
                 f"{self.cap_bytes >> 20} MiB cap" if self.cap_bytes else "no cap")
