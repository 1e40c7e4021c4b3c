"""Load and validate cgroups/allocation.toml, the single source of truth for slice limits.

Validation is strict on purpose: a typo in a limit must fail loudly at load time (naming the row
and the key) rather than silently leave a process unbounded on a small shared VPS.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "cgroups" / "allocation.toml"

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# cpuset values that adapt to the machine: the highest-numbered CPU the tree may use, and
# every other one (on a one-CPU machine both are its only CPU)
LAST_CPU = "last"
ALL_BUT_LAST_CPU = "all-but-last"
CPUSET_WORDS = (LAST_CPU, ALL_BUT_LAST_CPU)

_PARENT_KEYS = {"name", "memory_max", "memory_high", "swap", "cpu_weight", "cpu_quota", "cpuset"}
_SLICE_KEYS = (_PARENT_KEYS - {"name"}) | {"cpu_idle", "nice", "programs"}


class AllocationError(ValueError):
    """The allocation table is malformed; the message names the file, row and key."""


def parse_size(value: str | int) -> int:
    """Parse "500M" / "3.5G" / "1024" (binary units) into bytes."""
    if isinstance(value, bool):
        raise AllocationError(f"bad size {value!r}: expected e.g. '500M'")
    if isinstance(value, int):
        if value < 0:
            raise AllocationError(f"bad size {value!r}: must not be negative")
        return value
    if not isinstance(value, str):
        raise AllocationError(f"bad size {value!r}: expected a string like '500M'")
    m = _SIZE_RE.match(value)
    if not m:
        raise AllocationError(f"bad size {value!r}: use a number with a K/M/G/T suffix")
    number, unit = m.groups()
    if "." in number and not unit:
        raise AllocationError(f"bad size {value!r}: fractional bytes")
    return int(float(number) * _UNITS[unit.upper()])


@dataclass(frozen=True)
class Slice:
    """One cgroup slice (or the parent tree root) with limits already converted to bytes."""

    name: str
    memory_max: int
    memory_high: int | None = None
    swap_max: int | None = None
    cpu_weight: int = 100
    cpu_quota: float | None = None
    cpuset: str | None = None
    cpu_idle: bool = False      # runs only on CPU no other slice wants (cgroup cpu.idle)
    nice: int = 0
    programs: tuple[str, ...] = ()


@dataclass(frozen=True)
class AllocationTable:
    """The parent tree limits plus every slice, keyed by slice name."""

    parent: Slice
    slices: dict[str, Slice] = field(default_factory=dict)

    def slice(self, name: str) -> Slice:
        try:
            return self.slices[name]
        except KeyError:
            known = ", ".join(sorted(self.slices))
            raise AllocationError(f"unknown slice {name!r}; known slices: {known}") from None

    def slice_for_program(self, program: str) -> Slice:
        for s in self.slices.values():
            if program in s.programs:
                return s
        known = ", ".join(sorted(p for s in self.slices.values() for p in s.programs))
        raise AllocationError(f"program {program!r} is in no slice; known programs: {known}")


class _Row:
    """Typed access to one TOML table, raising errors that name file, row and key."""

    def __init__(self, where: str, row: str, data: Any, allowed: set[str]) -> None:
        self.where, self.row = where, row
        if not isinstance(data, dict):
            raise self.error("", f"must be a table, got {type(data).__name__}")
        self.data = data
        for key in data:
            if key not in allowed:
                raise self.error(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def error(self, key: str, msg: str) -> AllocationError:
        k = f" key {key!r}" if key else ""
        return AllocationError(f"{self.where}: [{self.row}]{k}: {msg}")

    def size(self, key: str, required: bool = False) -> int | None:
        if key not in self.data:
            if required:
                raise self.error(key, "is required")
            return None
        try:
            return parse_size(self.data[key])
        except AllocationError as e:
            raise self.error(key, str(e)) from None

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"expected an integer, got {v!r}")
        if not lo <= v <= hi:
            raise self.error(key, f"{v} is outside {lo}..{hi}")
        return v

    def boolean(self, key: str, default: bool) -> bool:
        v = self.data.get(key, default)
        if not isinstance(v, bool):
            raise self.error(key, f"expected true or false, got {v!r}")
        return v

    def quota(self, key: str) -> float | None:
        v = self.data.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(key, f"expected a number of cores, got {v!r}")
        if v <= 0:
            raise self.error(key, f"must be > 0 cores (omit the key for no cap), got {v}")
        return float(v)

    def cpuset(self, key: str) -> str | None:
        v = self.data.get(key, "")
        if not isinstance(v, str):
            raise self.error(key, f"expected a string like '0-1', got {v!r}")
        v = v.replace(" ", "")
        if v and v not in CPUSET_WORDS and not _CPUSET_RE.match(v):
            raise self.error(key, f"bad cpu list {v!r}; expected e.g. '0-1,3', '{LAST_CPU}' "
                                  f"or '{ALL_BUT_LAST_CPU}'")
        return v or None

    def programs(self, key: str) -> tuple[str, ...]:
        v = self.data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(p, str) and p for p in v):
            raise self.error(key, f"expected a list of program names, got {v!r}")
        return tuple(v)

    def build(self, name: str) -> Slice:
        mem_max = self.size("memory_max", required=True)
        assert mem_max is not None
        high = self.size("memory_high")
        if high is not None and high > mem_max:
            raise self.error("memory_high", f"{high} bytes is larger than memory_max {mem_max}")
        return Slice(
            name=name,
            memory_max=mem_max,
            memory_high=high,
            swap_max=self.size("swap"),
            cpu_weight=self.integer("cpu_weight", 100, 1, 10000),
            cpu_quota=self.quota("cpu_quota"),
            cpuset=self.cpuset("cpuset"),
            cpu_idle=self.boolean("cpu_idle", False),
            nice=self.integer("nice", 0, -20, 19),
            programs=self.programs("programs"),
        )


def load_allocation(path: Path | None = None) -> AllocationTable:
    """Read and validate the allocation table (default: cgroups/allocation.toml)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    where = str(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise AllocationError(f"{where}: TOML syntax error: {e}") from None
    except OSError as e:
        raise AllocationError(f"{where}: cannot read: {e.strerror}") from None

    for key in doc:
        if key not in ("parent", "slices"):
            raise AllocationError(f"{where}: unknown top-level key {key!r}")
    if "parent" not in doc:
        raise AllocationError(f"{where}: missing [parent] table")
    prow = _Row(where, "parent", doc["parent"], _PARENT_KEYS)
    pname = prow.data.get("name", "bitdaytrader")
    if not isinstance(pname, str) or not _NAME_RE.match(pname):
        raise prow.error("name", f"bad cgroup name {pname!r}")
    parent = prow.build(pname)

    raw = doc.get("slices", {})
    if not isinstance(raw, dict) or not raw:
        raise AllocationError(f"{where}: no [slices.NAME] tables")
    slices: dict[str, Slice] = {}
    owner: dict[str, str] = {}
    for name, data in raw.items():
        row = _Row(where, f"slices.{name}", data, _SLICE_KEYS)
        if not _NAME_RE.match(name):
            raise row.error("", "slice name must match [a-z][a-z0-9_-]*")
        s = row.build(name)
        if s.memory_max > parent.memory_max:
            raise row.error(
                "memory_max", f"{s.memory_max} bytes exceeds the parent's {parent.memory_max}"
            )
        if parent.cpu_quota is not None and (s.cpu_quota or 0) > parent.cpu_quota:
            raise row.error(
                "cpu_quota", f"{s.cpu_quota} cores exceeds the parent's {parent.cpu_quota}"
            )
        for prog in s.programs:
            if prog in owner:
                raise row.error(
                    "programs", f"program {prog!r} is already listed in [slices.{owner[prog]}]"
                )
            owner[prog] = name
        slices[name] = s
    return AllocationTable(parent=parent, slices=slices)
