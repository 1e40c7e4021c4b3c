"""Real-kernel tests of the cgroup v1 backend (the kernel, not a mock, enforces the limits).

Every test works in a fresh tree ``bdt-test-<hex>`` under this process's own cgroups; the fixture
kills what runs inside it and removes the tree even when a test fails. Skipped, with the reason,
only when the host has no writable v1 memory+cpu hierarchies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shared.resources.allocation import Slice
from shared.resources.cgroup import (
    own_cgroup_paths,
    parse_cpus,
    slice_of_pid,
    tree_base,
)
from shared.resources.cgroup_open import open_backend
from shared.resources.cgroup_v1 import V1Backend
from tests.cgroup_helpers import LEDGER, remove_leftover_trees, remove_tree, unique_tree

M = 1024**2
pytestmark = pytest.mark.cgroups

# The child waits for "go" on stdin so it is inside its slice before it allocates anything.
ALLOC = """
import sys, time
sys.stdin.readline()
target, hold = int(sys.argv[1]) << 20, float(sys.argv[2])
chunks = []
while sum(map(len, chunks)) < target:
    b = bytearray(8 << 20)
    b[::4096] = b"\\x01" * len(range(0, len(b), 4096))  # touch every page
    chunks.append(b)
print("done", flush=True)
time.sleep(hold)
"""

BUSY = """
import os, sys, time
sys.stdin.readline()
t0, c0 = time.monotonic(), os.times()
while time.monotonic() - t0 < float(sys.argv[1]):
    pass
c1 = os.times()
print(c1.user + c1.system - c0.user - c0.system, time.monotonic() - t0, flush=True)
"""


class Harness:
    """A test tree plus the child processes started in it (so teardown can kill them)."""

    def __init__(self, backend: V1Backend) -> None:
        self.b = backend
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, slice_name: str, code: str, *args: object) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs.append(p)
        self.b.place(slice_name, p.pid)
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        return p

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        remove_tree(self.b.tree_name)      # kills by pid what else runs in the test's tree
        left = [str(r) for r in self.b.roots.values() if r.exists()]
        assert not left, f"test cgroups left behind: {left}"


@pytest.fixture
def h() -> Iterator[Harness]:
    name = unique_tree()
    backend = open_backend(name)
    if not isinstance(backend, V1Backend):
        remove_tree(name)
        pytest.skip(f"cgroup v1 is not writable here ({backend.mode}): {backend.reason}")
    harness = Harness(backend)
    try:
        yield harness
    finally:
        harness.teardown()


def swap_can_absorb(b: V1Backend) -> bool:
    """True if swap is active and memsw accounting is missing, so a limit would only swap."""
    swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    return bool(swaps) and not (b.roots["memory"] / "memory.memsw.limit_in_bytes").exists()


def test_oom_kill_in_slice_spares_sibling(h: Harness) -> None:
    if swap_can_absorb(h.b):
        pytest.skip("swap is on and memory.memsw.* is missing: the limit would only swap")
    h.b.apply(Slice("small", 64 * M, swap_max=0))
    h.b.apply(Slice("sibling", 100 * M, swap_max=0))
    sib = h.spawn("sibling", ALLOC, 20, 60)
    assert sib.stdout is not None and sib.stdout.readline().strip() == "done"
    before = h.b.stats("small").oom_kills or 0
    held = h.b.stats("sibling")          # the sibling holds 20 MiB it wrote: process memory
    assert held.memory_anon is not None and held.memory_anon >= 20 * M, held
    assert held.memory_file is not None

    hog = h.spawn("small", ALLOC, 300, 0)
    assert hog.wait(timeout=10) == -signal.SIGKILL
    st = h.b.stats("small")
    assert st.oom_kills is not None and st.oom_kills >= before + 1
    assert st.memory_max == 64 * M and st.memory_peak is not None
    assert st.memory_peak <= 64 * M
    assert sib.poll() is None, "the sibling slice's process must survive"
    assert h.b.stats("sibling").pids == [sib.pid]


def test_parent_cap_holds_over_children(h: Harness) -> None:
    if swap_can_absorb(h.b):
        pytest.skip("swap is on and memory.memsw.* is missing: the limit would only swap")
    h.b.apply_parent(Slice(h.b.tree_name, 128 * M, swap_max=0))
    for n in ("c1", "c2"):
        h.b.apply(Slice(n, 100 * M, swap_max=0))
    kids = [h.spawn(n, ALLOC, 90, 3) for n in ("c1", "c2")]
    codes = [k.wait(timeout=15) for k in kids]
    assert -signal.SIGKILL in codes, f"180 MB fit under a 128 MB parent cap? {codes}"
    assert h.b.parent_stats().memory_max == 128 * M
    assert all(h.b.stats(n).memory_max == 100 * M for n in ("c1", "c2"))
    # v1 counts the kill in the victim's own memcg, not in the parent whose cap was hit.
    assert sum(h.b.stats(n).oom_kills or 0 for n in ("c1", "c2")) >= 1


def test_cpu_quota_throttles(h: Harness) -> None:
    h.b.apply(Slice("cpu", 64 * M, cpu_quota=0.2))
    p = h.spawn("cpu", BUSY, 2.0)
    out, _ = p.communicate(timeout=10)
    cpu, wall = map(float, out.split())
    share = cpu / wall
    assert 0.1 <= share <= 0.3, f"{cpu:.3f}s CPU in {wall:.2f}s wall = {share:.2f} cores"
    st = h.b.stats("cpu")
    assert st.cpu_quota == pytest.approx(0.2)
    # ~20 periods of 100 ms in 2 s, each cut short after 20 ms: the kernel counts them
    assert st.cpu_throttled >= 10 and st.cpu_throttled_seconds > 0.5, st
    if st.cpu_usage_seconds is not None:  # cpuacct is a separate hierarchy here
        assert abs(st.cpu_usage_seconds - cpu) < 0.15, (st.cpu_usage_seconds, cpu)


PINNED_BUSY = "import os; os.sched_setaffinity(0, {int(os.sys.argv[2])})\n" + BUSY


def test_an_idle_slice_yields_the_cpu_at_once(h: Harness) -> None:
    """Two busy loops on one CPU: the one in the cpu_idle slice gets (almost) nothing, though
    its weight is 100 times its sibling's (by weight alone it would get 99%)."""
    h.b.apply(Slice("work", 64 * M, cpu_weight=100))
    h.b.apply(Slice("background", 64 * M, cpu_weight=10000, cpu_idle=True))
    if h.b.stats("work").cpu_idle is None:
        pytest.skip("no cpu.idle in this kernel (< 5.15)")
    # re-applied (every cgexec applies its slice), then out of idle and back: the kernel
    # refuses a weight for an idle group, so the order of writes matters
    h.b.apply(Slice("background", 64 * M, cpu_weight=10000, cpu_idle=True))
    h.b.apply(Slice("background", 64 * M, cpu_weight=500))
    assert (h.b.stats("background").cpu_idle, h.b.stats("background").cpu_weight) == (False, 500)
    h.b.apply(Slice("background", 64 * M, cpu_weight=10000, cpu_idle=True))
    assert h.b.stats("background").cpu_idle is True
    cpu = sorted(os.sched_getaffinity(0))[0]
    procs = {n: psutil.Process(h.spawn(n, PINNED_BUSY, 4.0, cpu).pid)
             for n in ("background", "work")}
    time.sleep(1.0)                       # both started, pinned and busy from here on

    def cpu_seconds() -> dict[str, float]:
        return {n: p.cpu_times().user + p.cpu_times().system for n, p in procs.items()}

    before, t0 = cpu_seconds(), time.monotonic()
    time.sleep(1.5)
    after, wall = cpu_seconds(), time.monotonic() - t0
    share = {n: (after[n] - before[n]) / wall for n in procs}
    assert share["work"] > 0.9 and share["background"] < 0.05, share


def read(path: Path) -> int:
    return int(path.read_text())


def test_apply_is_idempotent_and_updates(h: Harness) -> None:
    s = Slice("upd", 64 * M, memory_high=48 * M, swap_max=0, cpu_weight=1000, cpu_quota=0.5)
    h.b.apply(s)
    first = h.b.stats("upd")
    h.b.apply(s)
    assert h.b.stats("upd") == first
    mem = h.b.slice_paths("upd")["memory"]
    assert read(mem / "memory.limit_in_bytes") == 64 * M
    assert read(mem / "memory.soft_limit_in_bytes") == 48 * M
    assert read(h.b.slice_paths("upd")["cpu"] / "cpu.shares") == 10240
    assert (first.cpu_weight, first.cpu_quota) == (1000, 0.5)
    has_memsw = (mem / "memory.memsw.limit_in_bytes").exists()
    if has_memsw:
        assert read(mem / "memory.memsw.limit_in_bytes") == 64 * M

    # grow (memsw must move first), shrink (limit must move first), then drop the swap cap
    for size in (256 * M, 32 * M):
        h.b.apply(Slice("upd", size, swap_max=0, cpu_weight=10))
        assert read(mem / "memory.limit_in_bytes") == size
        if has_memsw:
            assert read(mem / "memory.memsw.limit_in_bytes") == size
    h.b.apply(Slice("upd", 96 * M, cpu_weight=10))
    st = h.b.stats("upd")
    assert (st.memory_max, st.memory_high, st.cpu_quota, st.cpu_weight) == (96 * M, None, None, 10)
    if has_memsw:
        assert read(mem / "memory.memsw.limit_in_bytes") > 1 << 62
    assert read(h.b.slice_paths("upd")["cpu"] / "cpu.shares") == 102
    cpuset = h.b.slice_paths("upd").get("cpuset")
    if cpuset is not None:
        assert (cpuset / "cpuset.cpus").read_text().strip()
        assert (cpuset / "cpuset.mems").read_text().strip()
        h.b.apply(Slice("upd", 96 * M, cpuset="last"))       # the tree's highest CPU
        tree_cpus = parse_cpus((cpuset.parent / "cpuset.cpus").read_text())
        assert (cpuset / "cpuset.cpus").read_text().strip() == str(max(tree_cpus))
        h.b.apply(Slice("upd", 96 * M, cpuset="all-but-last"))   # every other CPU
        rest = tree_cpus - {max(tree_cpus)} or tree_cpus
        assert parse_cpus((cpuset / "cpuset.cpus").read_text()) == rest


def test_tree_base_rule() -> None:
    assert tree_base("/", "bitdaytrader") == "/"
    assert tree_base("/process_api/abc", "bitdaytrader") == "/process_api/abc"
    assert tree_base("/x/bitdaytrader/control", "bitdaytrader") == "/x"
    # on v2 the manager is parked in a leaf beside the tree; its children root at the same base
    assert tree_base("/x/bitdaytrader-manager", "bitdaytrader") == "/x"
    assert tree_base("/bitdaytrader/bot", "bitdaytrader") == "/"
    assert tree_base("/x/bitdaytrader-old/bot", "bitdaytrader") == "/x/bitdaytrader-old/bot"
    assert tree_base("/x/bitdaytrader", "bitdaytrader") == "/x"


def test_slice_of_pid_and_sibling_placement(h: Harness) -> None:
    h.b.apply(Slice("control", 64 * M))
    p = h.spawn("control", ALLOC, 1, 30)
    assert p.stdout is not None and p.stdout.readline().strip() == "done"
    assert slice_of_pid(p.pid, h.b.tree_name) == "control"
    assert slice_of_pid(os.getpid(), h.b.tree_name) is None
    assert slice_of_pid(2**22 + 12345, h.b.tree_name) is None
    # A process running inside the tree gets the same tree (siblings), not a nested one.
    inner = own_cgroup_paths(Path(f"/proc/{p.pid}/cgroup").read_text())
    assert inner["memory"].endswith(f"/{h.b.tree_name}/control")
    again = open_backend(h.b.tree_name, proc_cgroup_path=f"/proc/{p.pid}/cgroup")
    assert isinstance(again, V1Backend) and again.roots == h.b.roots


def test_remove_refuses_busy_slice(h: Harness) -> None:
    h.b.apply(Slice("busy", 64 * M))
    p = h.spawn("busy", ALLOC, 1, 30)
    assert p.stdout is not None and p.stdout.readline().strip() == "done"
    assert h.b.remove("busy") is False
    assert all(d.is_dir() for d in h.b.slice_paths("busy").values())
    tree = h.b.tree_paths()                                         # the tree's own directories
    assert {c: d.parent for c, d in h.b.slice_paths("busy").items()} == tree
    assert all((d / "cgroup.procs").is_file() for d in tree.values())
    p.kill()
    p.wait(timeout=5)
    assert h.b.remove("busy") is True
    assert not any(d.exists() for d in h.b.slice_paths("busy").values())
    with pytest.raises(ValueError, match="does not exist"):
        h.b.place("busy", p.pid)


def test_a_tree_left_by_a_killed_suite_is_removed_by_the_next(h: Harness) -> None:
    """A suite killed mid-test (SIGKILL: no cleanup runs) leaves its tree recorded with its
    pid; the next suite's start removes it, killing what still ran in it, and leaves alone
    the trees of processes that are alive."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan, mine = unique_tree(), unique_tree()
    (LEDGER / orphan).write_text(gone.stdout)             # made by a process now gone
    backend = open_backend(orphan)
    backend.apply(Slice("bot", 64 * M))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        backend.place("bot", sleeper.pid)
        assert orphan in remove_leftover_trees()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not any(root.exists() for root in backend.tree_paths().values())
        assert not (LEDGER / orphan).exists() and (LEDGER / mine).exists()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        remove_tree(orphan)
        remove_tree(mine)
    assert not (LEDGER / mine).exists()
