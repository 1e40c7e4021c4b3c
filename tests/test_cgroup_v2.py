"""cgroup v2 backend against a FAKE cgroupfs under tmp_path (plain directories and files).

cgroup v2 is mounted read-only / without controllers on the development machine, so these tests
check which files the backend writes and how it parses what the kernel would report; they do
not prove the kernel enforces anything (tests/test_cgroup_v1.py does that on real v1).
Also covers the pure helpers (mode detection, /proc/PID/cgroup parsing) and the NullBackend.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.resources.allocation import Slice
from shared.resources.cgroup import (
    NullBackend,
    detect_mode,
    own_cgroup_paths,
    slice_from_cgroup_text,
)
from shared.resources.cgroup_open import open_backend
from shared.resources.cgroup_v2 import V2Backend

M = 1024**2
TREE = "bdt-test-v2"

HYBRID_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V2_MOUNTS = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
V1_MOUNTS = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n"


def fake_cgroupfs(tmp_path: Path, own: str = "/svc/mgr", procs: str = "111\n222\n") -> Path:
    """A cgroup2 mount stand-in with the manager's own cgroup populated like the kernel would."""
    root = tmp_path / "cg"
    base = root / own.strip("/")
    base.mkdir(parents=True)
    for d in {root, base}:
        (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (d / "cgroup.subtree_control").write_text("")
        (d / "cgroup.procs").write_text("")
    (base / "cgroup.procs").write_text(procs)
    (tmp_path / "cgroup").write_text(f"0::{own}\n")
    (tmp_path / "mounts").write_text(V2_MOUNTS)
    return root


def open_fake(tmp_path: Path, root: Path) -> V2Backend:
    b = open_backend(
        TREE,
        mounts_path=str(tmp_path / "mounts"),
        proc_cgroup_path=str(tmp_path / "cgroup"),
        v2_root=root,
    )
    assert isinstance(b, V2Backend), getattr(b, "reason", b)
    return b


def test_detect_mode() -> None:
    assert detect_mode(HYBRID_MOUNTS) == "hybrid"
    assert detect_mode(V2_MOUNTS) == "v2"
    assert detect_mode(V1_MOUNTS) == "v1"
    assert detect_mode("proc /proc proc rw 0 0\n") == "none"
    # only the named systemd hierarchy on v1: controllers live on cgroup2
    assert detect_mode(V2_MOUNTS + "cgroup /x cgroup rw,name=systemd 0 0\n") == "v2"


def test_own_cgroup_paths_and_slice_parsing() -> None:
    text = "4:memory:/p/abc\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n"
    paths = own_cgroup_paths(text)
    assert paths["memory"] == "/p/abc" and paths["cpu"] == paths["cpuacct"] == "/"
    assert paths["unified"] == "/" and paths["name=systemd"] == "/"
    assert slice_from_cgroup_text("4:memory:/p/bitdaytrader/bot\n0::/\n", "bitdaytrader") == "bot"
    assert slice_from_cgroup_text("0::/x/bitdaytrader/batch\n", "bitdaytrader") == "batch"
    assert slice_from_cgroup_text("0::/x/bitdaytrader\n", "bitdaytrader") is None
    assert slice_from_cgroup_text("0::/x/other/bot\n", "bitdaytrader") is None


def test_delegation_moves_processes_then_enables_controllers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_cgroupfs(tmp_path)
    writes: list[tuple[str, str]] = []
    real = V2Backend._write

    def spy(path: Path, value: object, optional: bool = False) -> None:
        writes.append((str(path.relative_to(root)), str(value)))
        real(path, value, optional)

    monkeypatch.setattr(V2Backend, "_write", staticmethod(spy))
    b = open_fake(tmp_path, root)
    base = root / "svc/mgr"
    assert b.root == base / TREE and b.root.is_dir()
    moved = [v for p, v in writes if p == f"svc/mgr/{TREE}-manager/cgroup.procs"]
    assert moved == ["111", "222"]
    enable_at = writes.index(("svc/mgr/cgroup.subtree_control", "+memory +cpu +cpuset"))
    assert enable_at == 2, writes  # only after both processes left the manager's cgroup
    assert (base / "cgroup.subtree_control").read_text() == "+memory +cpu +cpuset"
    assert (b.root / "cgroup.subtree_control").read_text() == "+memory +cpu +cpuset"


def test_no_leaf_move_at_mount_root_and_only_available_controllers(tmp_path: Path) -> None:
    root = fake_cgroupfs(tmp_path, own="/", procs="1\n")
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    b = open_fake(tmp_path, root)
    assert not (root / f"{TREE}-manager").exists()
    assert (root / "cgroup.procs").read_text() == "1\n"
    assert (root / "cgroup.subtree_control").read_text() == "+memory +cpu"
    (b.root / "cgroup.controllers").write_text("memory\n")  # kernel view after enabling
    b.ensure_root()
    assert (b.root / "cgroup.subtree_control").read_text() == "+memory"
    b.apply(Slice("bot", 100 * M, cpu_quota=0.5))
    assert not (b.root / "bot" / "cpu.max").exists()
    assert not (b.root / "bot" / "cpuset.cpus").exists()


def test_slice_files(tmp_path: Path) -> None:
    b = open_fake(tmp_path, fake_cgroupfs(tmp_path))
    b.apply_parent(Slice(TREE, 4096 * M, memory_high=3584 * M, cpu_quota=1.0))
    assert (b.root / "memory.max").read_text() == str(4096 * M)
    assert (b.root / "memory.high").read_text() == str(3584 * M)
    assert (b.root / "cpu.max").read_text() == "100000 100000"

    b.apply(Slice("batch", 1536 * M, swap_max=0, cpu_weight=10, cpuset="0-1", nice=10))
    d = b.slice_paths("batch")["unified"]
    assert d.parent == b.tree_paths()["unified"] == b.root          # the tree's own directory
    got = {f: (d / f).read_text() for f in ("memory.max", "memory.high", "memory.swap.max")}
    assert got == {"memory.max": str(1536 * M), "memory.high": "max", "memory.swap.max": "0"}
    assert (d / "cpu.max").read_text() == "max 100000"
    assert (d / "cpu.weight").read_text() == "10"
    assert (d / "cpuset.cpus").read_text() == "0-1"

    b.apply(Slice("batch", 512 * M, memory_high=400 * M, cpu_quota=0.25))  # update in place
    assert (d / "memory.max").read_text() == str(512 * M)
    assert (d / "memory.high").read_text() == str(400 * M)
    assert (d / "memory.swap.max").read_text() == "max"
    assert (d / "cpu.max").read_text() == "25000 100000"
    assert (d / "cpu.weight").read_text() == "100"
    assert (d / "cpuset.cpus").read_text() == ""

    (b.root / "cpuset.cpus.effective").write_text("0-3,6\n")     # what the tree may use
    b.apply(Slice("batch", 512 * M, cpuset="last"))
    assert (d / "cpuset.cpus").read_text() == "6"
    b.apply(Slice("batch", 512 * M, cpuset="all-but-last"))
    assert (d / "cpuset.cpus").read_text() == "0-3"


def test_stats_parse_kernel_files(tmp_path: Path) -> None:
    b = open_fake(tmp_path, fake_cgroupfs(tmp_path))
    b.apply(Slice("bot", 500 * M, cpu_weight=1000, cpu_quota=0.5))
    b.apply(Slice("batch", 500 * M, cpu_weight=10, cpu_idle=True))
    assert (b.root / "batch" / "cpu.idle").read_text() == "1"
    assert (b.stats("batch").cpu_idle, b.stats("bot").cpu_idle) == (True, False)
    d = b.root / "bot"
    (d / "memory.current").write_text("12345678\n")
    (d / "memory.events").write_text("low 0\nhigh 4\nmax 9\noom 3\noom_kill 2\n")
    (d / "memory.stat").write_text("anon 9000000\nfile 3000000\nkernel 345678\n")
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
                                "nr_periods 40\nnr_throttled 7\nthrottled_usec 250000\n")
    b.place("bot", 4242)
    st = b.stats("bot")
    assert (st.memory_current, st.memory_peak, st.memory_max) == (12345678, None, 500 * M)
    assert (st.memory_high, st.oom_kills) == (None, 2)
    assert (st.memory_anon, st.memory_file) == (9000000, 3000000)
    assert st.cpu_usage_seconds == pytest.approx(1.5)
    assert (st.cpu_throttled, st.cpu_throttled_seconds) == (7, pytest.approx(0.25))
    assert (st.cpu_quota, st.cpu_weight, st.pids, st.enforced) == (0.5, 1000, [4242], True)
    (d / "memory.peak").write_text("23456789\n")
    assert b.stats("bot").memory_peak == 23456789
    assert b.parent_stats().name == TREE
    with pytest.raises(ValueError, match="does not exist"):
        b.place("nope", 1)


def test_remove(tmp_path: Path) -> None:
    b = open_fake(tmp_path, fake_cgroupfs(tmp_path))
    for n in ("bot", "cache"):
        b.apply(Slice(n, 100 * M))
    b.place("bot", 4242)
    assert b.remove("bot") is False and (b.root / "bot").is_dir()
    assert b.remove("cache") is True and not (b.root / "cache").exists()
    assert b.remove_tree() is False and b.root.is_dir()  # bot still has a process
    (b.root / "bot" / "cgroup.procs").write_text("")
    assert b.remove_tree() is True and not b.root.exists()
    assert (b.base / f"{TREE}-manager").is_dir()  # the leaf is not part of the tree


def test_null_backend_when_root_is_under_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    (tmp_path / "cgroup").write_text("0::/\n")
    with caplog.at_level(logging.WARNING, logger="bdt.cgroup"):
        b = open_backend(TREE, proc_cgroup_path=str(tmp_path / "cgroup"), v2_root=blocker / "cg")
    assert isinstance(b, NullBackend) and not b.enforced
    assert "not found" in b.reason
    assert len(caplog.records) == 1 and "NOT enforced" in caplog.records[0].getMessage()


def test_null_backend_on_permission_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = fake_cgroupfs(tmp_path)

    def denied(self: Path, *a: object, **kw: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with caplog.at_level(logging.WARNING, logger="bdt.cgroup"):
        b = open_backend(
            TREE, proc_cgroup_path=str(tmp_path / "cgroup"), mounts_path="/dev/null", v2_root=root
        )
    assert isinstance(b, NullBackend)
    assert "cannot write cgroups: Permission denied" in b.reason and TREE in b.reason
    assert len(caplog.records) == 1
    # every call is a harmless no-op
    s = Slice("bot", 100 * M)
    b.apply_parent(s)
    b.apply(s)
    b.place("bot", 1)
    st = b.stats("bot")
    assert (st.enforced, st.memory_current, st.oom_kills, st.pids) == (False, None, None, [])
    assert b.remove("bot") and b.remove_tree() and b.slice_paths("bot") == {}


def test_null_backend_missing_controller_or_mount(tmp_path: Path) -> None:
    root = fake_cgroupfs(tmp_path)
    (root / "svc/mgr/cgroup.controllers").write_text("cpu io pids\n")
    b = open_backend(TREE, proc_cgroup_path=str(tmp_path / "cgroup"), v2_root=root)
    assert isinstance(b, NullBackend) and "memory controller" in b.reason
    assert not (root / "svc/mgr" / TREE).exists()
    (tmp_path / "m").write_text("proc /proc proc rw 0 0\n")
    b = open_backend(TREE, mounts_path=str(tmp_path / "m"))
    assert isinstance(b, NullBackend) and "no cgroup filesystem" in b.reason
