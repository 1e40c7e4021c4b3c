"""The real supervisord with the real supervisord.conf, in a temporary var directory.

The config is reached through a symlink in the temporary directory: supervisord takes
%(here)s from the path it is given, so sockets, pid file and logs land there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest

from shared.allocation import load_allocation
from shared.bus import BusClient, wait_for
from shared.cgroup import slice_of_pid
from shared.config import load_config
from tests.cgroup_helpers import remove_tree, unique_tree, writable_backend
from tests.helpers import REPO, child_env, wait_until

AUTOSTART = ("cache", "history", "predictor", "bot", "monitor", "scheduler")
ON_DEMAND = ("backtest", "walkforward", "dashboard")


class Stack:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bdt-"))
        self.var = self.dir / "var"
        (self.var / "log").mkdir(parents=True)
        (self.var / "run").mkdir(mode=0o700)
        self.conf = self.dir / "supervisord.conf"
        self.conf.symlink_to(REPO / "supervisord.conf")
        self.tree = unique_tree()
        self.env = child_env(self.var, BDT_CGROUPS__TREE=self.tree)
        self.cfg = load_config({"BDT_VAR": str(self.var), "BDT_CGROUPS__TREE": self.tree})
        self.proc = subprocess.Popen(
            ["supervisord", "-n", "-c", str(self.conf)], env=self.env, cwd=self.dir,
            stdout=open(self.dir / "supervisord.out", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        self.seen_pids: set[int] = set()

    def ctl(self, *args: str) -> str:
        out = subprocess.run(["supervisorctl", "-c", str(self.conf), *args], env=self.env,
                             capture_output=True, text=True, timeout=30)
        return out.stdout + out.stderr

    def pids(self) -> dict[str, int]:
        table = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "RUNNING":
                table[parts[0].split(":")[1]] = int(parts[3].rstrip(","))
        self.seen_pids.update(table.values())
        return table

    def bdt(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bdt", *args], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def shutdown(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    try:
        wait_until(lambda: set(AUTOSTART) <= set(s.pids()), timeout=30,
                   what="every autostart program RUNNING")
        for name in AUTOSTART:
            wait_for(name, s.cfg, timeout_s=15)
        yield s
    finally:
        s.shutdown()
        remove_tree(s.tree)
        shutil.rmtree(s.dir, ignore_errors=True)


def test_every_autostart_program_runs_and_answers(stack):
    pids = stack.pids()
    assert set(AUTOSTART) <= set(pids)
    for name in AUTOSTART:
        with BusClient(name, stack.cfg, timeout_ms=1000) as client:
            reply = client.call("status")
        assert reply["pid"] == pids[name]
        assert reply["service"] == name
    status = stack.ctl("status")
    for name in ON_DEMAND:
        assert f"bitdaytrader:{name}" in status and "STOPPED" in status


def test_stop_and_start_one_program_while_the_others_keep_running(stack):
    before = stack.pids()
    assert "stopped" in stack.ctl("stop", "bitdaytrader:cache")
    after_stop = stack.pids()
    assert "cache" not in after_stop
    assert not (stack.var / "run" / "cache.sock").exists()
    assert "started" in stack.ctl("start", "bitdaytrader:cache")
    after = stack.pids()
    for name in AUTOSTART:
        if name != "cache":
            assert after[name] == before[name], f"{name} was restarted"
    assert after["cache"] != before["cache"]
    wait_for("cache", stack.cfg)
    restarted = stack.ctl("restart", "bitdaytrader:bot")
    assert "stopped" in restarted and "started" in restarted
    wait_for("bot", stack.cfg)
    assert stack.pids()["bot"] != before["bot"]


def test_every_program_runs_in_its_slice_with_the_tables_limits(stack):
    backend, reason = writable_backend(stack.tree)
    if backend is None:
        pytest.skip(f"cgroups not writable here: {reason}")
    table = load_allocation()
    for name, pid in stack.pids().items():
        expected = table.slice_for_program(name)
        assert slice_of_pid(pid, stack.tree) == expected.name, name
        stats = backend.stats(expected.name)
        assert pid in stats.pids
        assert stats.memory_max == expected.memory_max
        assert stats.cpu_weight == expected.cpu_weight
    parent = backend.parent_stats()
    assert parent.memory_max == table.parent.memory_max
    assert parent.cpu_quota == table.parent.cpu_quota


def test_bdt_status_json_reports_every_program_from_supervisord_and_cgroups(stack):
    out = stack.bdt("status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    by_name = {p["program"]: p for p in status["programs"]}
    assert set(AUTOSTART) | set(ON_DEMAND) == set(by_name)
    for name in AUTOSTART:
        entry = by_name[name]
        assert entry["state"] == "RUNNING" and entry["service"]["pid"] == entry["pid"]
        if status["cgroups"]["enforced"]:
            assert 0 < entry["memory_bytes"] < entry["memory_cap_bytes"]
            assert entry["oom_kills"] == 0
    text = stack.bdt("status")
    assert "cgroup limits:" in text.stdout and "bot" in text.stdout
    show = stack.bdt("cgroups", "show", "--json")
    assert show.returncode == 0, show.stderr
    assert {r["slice"] for r in json.loads(show.stdout)["slices"]} >= {"bot", "batch"}


def test_a_batch_program_says_it_is_not_built_yet(stack):
    stack.ctl("start", "bitdaytrader:backtest")
    wait_until(lambda: "EXITED" in stack.ctl("status", "bitdaytrader:backtest"),
               what="backtest to exit")
    log = (stack.var / "log" / "backtest.log").read_text()
    assert "not implemented yet" in log


def test_shutdown_leaves_no_process_socket_or_file(stack):
    pids = set(stack.pids().values()) | stack.seen_pids
    children = psutil.Process(stack.proc.pid).children(recursive=True)
    stack.shutdown()
    assert stack.proc.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert sorted(os.listdir(stack.var / "run")) == []
