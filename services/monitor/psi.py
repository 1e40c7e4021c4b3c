"""Pressure stall information (PSI): the share of time tasks waited for memory, CPU or I/O.

The kernel offers it per cgroup on v2 (``memory.pressure``, ``cpu.pressure``, ``io.pressure``
in the slice's directory) and for the whole machine in ``/proc/pressure/`` (Linux ≥ 4.20 with
PSI on). cgroup v1 hierarchies usually have no pressure files: the figures are then None,
never a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESOURCES = ("memory", "cpu", "io")
# which v1 hierarchy would hold a resource's pressure file, if the kernel exposed one there
V1_CONTROLLER = {"memory": "memory", "cpu": "cpu", "io": "blkio"}


def parse_pressure(text: str) -> dict[str, float]:
    """One pressure file as a flat dict: ``some_avg10``, ``some_avg60``, ``some_avg300`` (% of
    wall time over 10/60/300 s), ``some_total_us`` (cumulative µs), and the same for ``full``
    when the file has that line. ValueError for a line that is not PSI."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] not in ("some", "full"):
            raise ValueError(f"not a pressure line: {line!r}")
        for word in words[1:]:
            key, _, value = word.partition("=")
            if key == "total":
                out[f"{words[0]}_total_us"] = float(int(value))
            else:
                out[f"{words[0]}_{key}"] = float(value)
    return out


def read_pressure(path: Path) -> dict[str, float] | None:
    """The parsed pressure file at ``path``, or None when it is missing or unreadable."""
    try:
        return parse_pressure(path.read_text())
    except (OSError, ValueError):
        return None


def cgroup_pressure(dirs: dict[str, Path]) -> dict[str, dict[str, float] | None]:
    """Memory, CPU and I/O pressure of one cgroup. ``dirs`` is the backend's ``slice_paths``
    (``{"unified": dir}`` on v2, one dir per controller on v1); None per resource without a
    pressure file."""
    out: dict[str, dict[str, float] | None] = {}
    for resource in RESOURCES:
        where = dirs.get("unified") or dirs.get(V1_CONTROLLER[resource])
        out[resource] = None if where is None else read_pressure(where / f"{resource}.pressure")
    return out


def host_pressure(proc_root: Path = Path("/proc")) -> dict[str, dict[str, float] | None]:
    """The whole machine's pressure (other tenants of a shared VPS included)."""
    return {r: read_pressure(proc_root / "pressure" / r) for r in RESOURCES}


def avg10(pressure: dict[str, Any] | None, resource: str, kind: str = "some") -> float | None:
    """``kind`` avg10 (%) of ``resource`` from a ``cgroup_pressure`` result, or None."""
    figures = (pressure or {}).get(resource)
    return None if figures is None else figures.get(f"{kind}_avg10")
