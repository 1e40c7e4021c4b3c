"""The allocation table loads with the agreed numbers and every bad edit fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.resources.allocation import AllocationError, load_allocation, parse_size
from shared.resources.cgroup import format_cpus, parse_cpus, resolve_cpus

M = 1024**2
G = 1024**3

VALID = """
[parent]
name = "bitdaytrader"
memory_max = "1G"
memory_high = "900M"
cpu_quota = 1.0

[slices.alpha]
memory_max = "100M"
cpu_weight = 200
programs = ["a1"]

[slices.beta]
memory_max = "200M"
swap = "0"
nice = 5
programs = ["b1", "b2"]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "allocation.toml"
    p.write_text(text)
    return p


def test_parse_size() -> None:
    assert parse_size("500M") == 500 * M
    assert parse_size("3.5G") == int(3.5 * G)
    assert parse_size("1.5G") == 1536 * M
    assert parse_size("4k") == 4096
    assert parse_size("1T") == 1024**4
    assert parse_size("1024") == 1024
    assert parse_size(2048) == 2048
    for bad in ("5X", "", "M", "-1M", "1.5", True, 1.5):
        with pytest.raises(AllocationError):
            parse_size(bad)  # type: ignore[arg-type]


def test_real_table_numbers() -> None:
    t = load_allocation()
    assert t.parent.name == "bitdaytrader"
    assert t.parent.memory_max == 4 * G
    assert t.parent.memory_high == int(3.5 * G)
    assert t.parent.cpu_quota == 1.0
    assert t.parent.cpuset is None
    expect = {
        "bot": (500 * M, 1000, ("bot",)),
        "predictor": (500 * M, 500, ("predictor",)),
        "cache": (300 * M, 100, ("cache",)),
        "history": (500 * M, 100, ("history",)),
        "batch": (1536 * M, 10, ("backtest", "walkforward")),
        "dashboard": (500 * M, 50, ("dashboard",)),
        "control": (150 * M, 100, ("scheduler", "monitor")),
    }
    assert set(t.slices) == set(expect)
    for name, (mem, weight, programs) in expect.items():
        s = t.slice(name)
        assert (s.memory_max, s.cpu_weight, s.programs) == (mem, weight, programs), name
    batch = t.slice("batch")
    assert batch.swap_max == 0 and batch.nice == 10 and batch.cpu_idle
    assert {n: s.cpuset for n, s in t.slices.items() if s.cpuset} == {
        "bot": "all-but-last", "predictor": "all-but-last", "batch": "last"}
    assert t.slice("bot").swap_max is None and t.slice("bot").nice == 0
    assert [n for n, s in t.slices.items() if s.cpu_idle] == ["batch"]
    assert t.slice_for_program("walkforward").name == "batch"
    assert t.slice_for_program("monitor").name == "control"


def test_cpu_lists() -> None:
    assert parse_cpus("0-2,5\n") == {0, 1, 2, 5} and parse_cpus("") == set()
    assert resolve_cpus("last", {0, 1}) == "1" and resolve_cpus("last", {0}) == "0"
    assert resolve_cpus("0-1", {0, 1, 2}) == "0-1"
    assert resolve_cpus("all-but-last", {0, 1}) == "0"
    assert resolve_cpus("all-but-last", {0}) == "0"            # one CPU: share it
    assert resolve_cpus("all-but-last", {0, 1, 2, 3}) == "0-2"
    assert resolve_cpus("all-but-last", {0, 2, 3, 5, 7}) == "0,2-3,5"
    assert format_cpus({0, 1, 2, 5}) == "0-2,5" and format_cpus({4}) == "4"
    for spec in ("last", "all-but-last"):
        with pytest.raises(ValueError, match="no CPU"):
            resolve_cpus(spec, set())


def test_lookup_errors_list_known_names() -> None:
    t = load_allocation()
    with pytest.raises(AllocationError, match="known slices: batch, bot"):
        t.slice("nope")
    with pytest.raises(AllocationError, match="'ghost'.*backtest"):
        t.slice_for_program("ghost")


def test_valid_fixture_loads(tmp_path: Path) -> None:
    t = load_allocation(write(tmp_path, VALID))
    assert t.slice("beta").swap_max == 0 and t.slice("beta").nice == 5


@pytest.mark.parametrize(
    ("old", "new", "row", "key", "what"),
    [
        ('memory_max = "100M"', 'memory_max = "100Q"', "slices.alpha", "memory_max", "bad size"),
        ("cpu_weight = 200", "cpu_weight = 200\ncolour = 1", "slices.alpha", "colour", "unknown"),
        ('memory_max = "200M"', 'memory_max = "2G"', "slices.beta", "memory_max", "parent"),
        (
            'memory_max = "200M"',
            'memory_max = "200M"\nmemory_high = "300M"',
            "slices.beta",
            "memory_high",
            "larger than memory_max",
        ),
        ('["b1", "b2"]', '["b1", "a1"]', "slices.beta", "programs", "slices.alpha"),
        ("nice = 5", "nice = 20", "slices.beta", "nice", "-20..19"),
        ("nice = 5", 'nice = "5"', "slices.beta", "nice", "integer"),
        ("nice = 5", 'nice = 5\ncpuset = "first"', "slices.beta", "cpuset", "'all-but-last'"),
        ("nice = 5", 'nice = 5\ncpu_idle = "yes"', "slices.beta", "cpu_idle", "true or false"),
        ('name = "bitdaytrader"', 'name = "bdt"\ncpu_idle = true', "parent", "cpu_idle",
         "unknown"),
        ("cpu_weight = 200", "cpu_weight = 0", "slices.alpha", "cpu_weight", "1..10000"),
        ("cpu_weight = 200", "cpu_quota = 0", "slices.alpha", "cpu_quota", "> 0"),
        ("cpu_weight = 200", "cpu_quota = 2.0", "slices.alpha", "cpu_quota", "parent"),
        ('programs = ["a1"]', 'programs = "a1"', "slices.alpha", "programs", "list"),
        ('memory_high = "900M"', 'memory_high = "2G"', "parent", "memory_high", "memory_max"),
        ('name = "bitdaytrader"', 'name = "bdt"\nnice = 1', "parent", "nice", "unknown"),
    ],
)
def test_validation_names_row_and_key(
    tmp_path: Path, old: str, new: str, row: str, key: str, what: str
) -> None:
    assert old in VALID
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(AllocationError) as exc:
        load_allocation(path)
    msg = str(exc.value)
    assert f"[{row}]" in msg and repr(key) in msg and what in msg, msg
    assert str(path) in msg


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace('memory_max = "100M"', "memory_max = 100M", 1))
    with pytest.raises(AllocationError, match="TOML syntax error") as exc:
        load_allocation(path)
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AllocationError, match="cannot read"):
        load_allocation(tmp_path / "nope.toml")
