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
from typing import Any

from shared.bus.client import BusClient, wait_for
from shared.bus.streams import Subscriber
from shared.config import load_config
from shared.models.training import train
from shared.resources.supervisor import read_conf
from tests.cgroup_helpers import remove_tree, unique_tree
from tests.helpers import REPO, VENV_BIN, child_env, wait_until

# from supervisord.conf itself, never a copy of it
AUTOSTART = tuple(n for n, p in read_conf().items() if p.get("autostart") == "true")
ON_DEMAND = tuple(n for n, p in read_conf().items() if p.get("autostart") != "true")


class Stack:
    def __init__(self, **extra_env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bdt-"))
        self.var = self.dir / "var"
        (self.var / "log").mkdir(parents=True)
        (self.var / "run").mkdir(mode=0o700)
        self.conf = self.dir / "supervisord.conf"
        self.conf.symlink_to(REPO / "supervisord.conf")
        self.tree = unique_tree()
        # the sample's past as long as model.train_bars (not the default walk-forward's 114
        # days) unless a test asks for it: tests/test_default_jobs.py does
        extra_env.setdefault("BDT_MARKET__SAMPLE_PAST_DAYS", "0")
        self.env = child_env(self.var, BDT_CGROUPS__TREE=self.tree, **extra_env)
        self.cfg = load_config({k: v for k, v in self.env.items() if k.startswith("BDT_")})
        self.proc: subprocess.Popen | None = None
        self.seen_pids: set[int] = set()

    def start(self) -> Stack:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "supervisord"), "-n", "-c", str(self.conf)], env=self.env,
            cwd=self.dir,
            stdout=open(self.dir / "supervisord.out", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        return self

    def wait_running(self, programs, timeout: float = 60) -> None:
        wait_until(lambda: set(programs) <= set(self.pids()), timeout=timeout,
                   what=f"{', '.join(programs)} RUNNING")
        for name in programs:
            wait_for(name, self.cfg, timeout_s=15)

    def status(self, name: str) -> dict:
        return self.call(name, "status")

    def call(self, name: str, op: str, **args: object) -> Any:
        with BusClient(name, self.cfg, timeout_ms=2000) as client:
            return client.call(op, **args)

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


SYMBOL = "BTC/USDT"
PAST = 3000              # bars of the sample market's past, stored by the first training


def make_stack(total_bars: int, **env: str) -> Stack:
    """A stack replaying ``total_bars`` sample bars after PAST bars of the same market's past,
    which ``train`` stores (the predictor's warm-up) and trains on. The bot waits for three bar
    subscribers: history, predictor and the test's Recorder."""
    settings = {"BDT_MARKET__SAMPLE_BARS": str(total_bars),
                "BDT_MARKET__REPLAY_SPEED": "6000",          # a 1m bar every 10 ms
                "BDT_BOT__WAIT_SUBSCRIBERS": "3",
                "BDT_MODEL__TRAIN_BARS": str(PAST), "BDT_MODEL__MIN_TRAIN_BARS": "500", **env}
    stack = Stack(**settings)
    train(stack.cfg)
    return stack


class Recorder:
    """Subscribes to predictions first, then to bars: the bot waits for this third bar
    subscriber, so nothing is published before both subscriptions are in place."""

    def __init__(self, stack: Stack) -> None:
        self.predictions = Subscriber(["predictions"], stack.cfg)
        wait_until(lambda: stack.status("predictor")["prediction_subscribers"] >= 1,
                   what="the predictions subscription")
        self.bars = Subscriber(["bars"], stack.cfg)
        self.bar_ts: list[int] = []
        self.predicted: list[int] = []

    def drain(self) -> None:
        while (msg := self.bars.receive(timeout_ms=0)) is not None:
            self.bar_ts.append(msg.fields["ts"])
        while (msg := self.predictions.receive(timeout_ms=0)) is not None:
            if "skipped" in msg.fields:
                continue
            assert set(msg.fields) >= {"expected_return", "p_up", "volatility",
                                       "model_version", "bar_time"}
            assert 0 <= msg.fields["p_up"] <= 1 and msg.fields["volatility"] > 0
            self.predicted.append(msg.fields["bar_time"])

    def until(self, predicate, timeout: float = 60, what: str = "") -> None:
        def check():
            self.drain()
            return predicate()
        wait_until(check, timeout=timeout, interval=0.02, what=what)

    def close(self) -> None:
        self.predictions.close()
        self.bars.close()


def small_stack(**env: str):
    """A started stack on 200 sample bars whose bot waits for no subscriber: for tests about the
    process table and the slices, not market data (a generator for a pytest fixture)."""
    s = Stack(BDT_MARKET__SAMPLE_BARS="200", BDT_BOT__WAIT_SUBSCRIBERS="0", **env)
    try:
        s.start().wait_running(AUTOSTART)
        yield s
    finally:
        s.remove()
