"""`bdt cgexec` on the real kernel, through a small test allocation table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.config import load_config
from shared.resources import cgexec as slice_exec
from shared.resources.cgroup import NullBackend
from tests.cgroup_helpers import remove_tree, unique_tree, writable_backend
from tests.helpers import child_env, wait_until

SMALL_TABLE = """
[parent]
name = "bitdaytrader"
memory_max = "256M"
cpu_quota = 1.0

[slices.bot]
memory_max = "64M"
cpu_weight = 1000
programs = ["bot"]

[slices.batch]
memory_max = "64M"
swap = "0"
cpu_weight = 10
nice = 10
programs = ["backtest"]

[slices.control]
memory_max = "64M"
programs = ["scheduler"]
"""

HOG = "b = []\nwhile True: b.append(bytearray(8 << 20))\n"


@pytest.fixture
def tree_env(tmp_path, var_dir):
    tree = unique_tree()
    backend, reason = writable_backend(tree)
    if backend is None:
        pytest.skip(f"cgroups not writable here: {reason}")
    table = tmp_path / "allocation.toml"
    table.write_text(SMALL_TABLE)
    env = child_env(var_dir, BDT_CGROUPS__TREE=tree, BDT_CGROUPS__ALLOCATION=str(table))
    yield tree, env, backend
    remove_tree(tree)


def cgexec(env, slice_name: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bdt", "cgexec", slice_name, "--", *cmd], env=env,
                          capture_output=True, text=True, timeout=60, **kw)


def test_cgexec_places_the_command_and_applies_nice(tree_env):
    tree, env, _ = tree_env
    out = cgexec(env, "batch", sys.executable, "-c",
                 "import os; print(open('/proc/self/cgroup').read()); print(os.nice(0))")
    assert out.returncode == 0, out.stderr
    assert f"/{tree}/batch\n" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "10"


def test_cgexec_from_inside_a_slice_lands_in_a_sibling(tree_env):
    """The scheduler (control slice) starting a job: the job goes to batch, not control/batch."""
    tree, env, _ = tree_env
    out = cgexec(env, "control", "bdt", "cgexec", "batch", "--", "cat", "/proc/self/cgroup")
    assert out.returncode == 0, out.stderr
    assert f"/{tree}/batch\n" in out.stdout
    assert f"{tree}/control/" not in out.stdout


def test_over_its_cap_the_command_is_oom_killed_and_a_sibling_lives(tree_env):
    tree, env, backend = tree_env
    sibling = subprocess.Popen(["bdt", "cgexec", "bot", "--", sys.executable, "-c",
                                "import time; x = bytearray(16 << 20); time.sleep(60)"], env=env)
    try:
        wait_until(lambda: sibling.pid in backend.stats("bot").pids, timeout=30,
                   what="the sibling to be in its slice")
        hog = cgexec(env, "batch", sys.executable, "-c", HOG)
        assert hog.returncode == -9, hog.stderr
        assert backend.stats("batch").oom_kills >= 1
        assert sibling.poll() is None
        assert backend.stats("bot").oom_kills == 0
    finally:
        sibling.kill()
        sibling.wait()


def test_bad_slice_or_table_is_a_clear_error(tree_env, tmp_path):
    _, env, _ = tree_env
    out = cgexec(env, "nosuch", "true")
    assert out.returncode != 0 and "nosuch" in out.stderr and "bot" in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text(SMALL_TABLE.replace('memory_max = "64M"\ncpu_weight = 1000',
                                          'memory_max = "64Q"\ncpu_weight = 1000'))
    out = cgexec({**env, "BDT_CGROUPS__ALLOCATION": str(broken)}, "bot", "true")
    assert out.returncode != 0 and "slices.bot" in out.stderr and "memory_max" in out.stderr


def test_not_enforced_runs_anyway_unless_required(monkeypatch, var_dir):
    """Where cgroups cannot be written the program still runs — unless cgroups.required."""
    monkeypatch.setattr(slice_exec, "open_backend",
                        lambda *a, **k: NullBackend("bitdaytrader", "read-only cgroupfs"))
    ran: list[list[str]] = []
    monkeypatch.setattr(slice_exec.os, "execvp", lambda prog, argv: ran.append(argv))
    monkeypatch.setattr(slice_exec.os, "setpriority", lambda *a: None)
    cfg = load_config({"BDT_VAR": str(var_dir)})
    slice_exec.cgexec(cfg, "bot", ["echo", "hi"])
    assert ran == [["echo", "hi"]]
    strict = load_config({"BDT_VAR": str(var_dir), "BDT_CGROUPS__REQUIRED": "true"})
    with pytest.raises(SystemExit, match="cgroups.required is true.*read-only cgroupfs"):
        slice_exec.cgexec(strict, "bot", ["echo", "hi"])
