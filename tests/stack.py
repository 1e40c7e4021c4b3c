"""A whole stack under the real supervisord with the real supervisord.conf, in a temporary
var directory reached through a symlink (supervisord takes %(here)s from the path it is given,
so sockets, pid file and logs land there), and in a cgroup tree of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from shared.bus import BusClient, wait_for
from shared.config import load_config
from tests.cgroup_helpers import remove_tree, unique_tree
from tests.helpers import REPO, child_env, wait_until

AUTOSTART = ("cache", "history", "predictor", "bot", "monitor", "scheduler")
ON_DEMAND = ("backtest", "walkforward", "dashboard")


class Stack:
    def __init__(self, **extra_env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bdt-"))
        self.var = self.dir / "var"
        (self.var / "log").mkdir(parents=True)
        (self.var / "run").mkdir(mode=0o700)
        self.conf = self.dir / "supervisord.conf"
        self.conf.symlink_to(REPO / "supervisord.conf")
        self.tree = unique_tree()
        self.env = child_env(self.var, BDT_CGROUPS__TREE=self.tree, **extra_env)
        self.cfg = load_config({k: v for k, v in self.env.items() if k.startswith("BDT_")})
        self.proc: subprocess.Popen | None = None
        self.seen_pids: set[int] = set()

    def start(self) -> Stack:
        self.proc = subprocess.Popen(
            ["supervisord", "-n", "-c", str(self.conf)], env=self.env, cwd=self.dir,
            stdout=open(self.dir / "supervisord.out", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        return self

    def wait_running(self, programs, timeout: float = 30) -> None:
        wait_until(lambda: set(programs) <= set(self.pids()), timeout=timeout,
                   what=f"{', '.join(programs)} RUNNING")
        for name in programs:
            wait_for(name, self.cfg, timeout_s=15)

    def status(self, name: str) -> dict:
        with BusClient(name, self.cfg, timeout_ms=2000) as client:
            return client.call("status")

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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


    def remove(self) -> None:
        """Stop everything and remove the cgroups and files of this stack."""
        self.shutdown()
        remove_tree(self.tree)
        if os.environ.get("BDT_KEEP_TEST_DIRS"):   # debugging: keep the logs
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
