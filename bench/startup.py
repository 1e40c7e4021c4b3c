"""How long each program takes from its start to serving the bus, idle and on a loaded machine
(two CPU-bound processes outside the stack, as on a busy 2-core VPS), next to the
``startsecs`` supervisord.conf gives it: a program is RUNNING in supervisorctl only after
``startsecs``, so ``startsecs`` must cover the slowest start measured here (issue 24: RUNNING
up to ~35 s before the program listened)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from bench import common
from shared.bus.client import BusClient, BusError
from shared.models.training import train
from shared.programs import PROGRAMS
from shared.resources.supervisor import read_conf
from tests.stack import Stack

SERVING = tuple(name for name, p in PROGRAMS.items() if p.kind.serves)
HOG = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass"


def _one_start(loaded: bool) -> dict[str, float]:
    """Seconds from supervisord's start to each serving program's first answer to ping."""
    stack = Stack(BDT_MARKET__SAMPLE_BARS="6000", BDT_MODEL__MIN_TRAIN_BARS="2000")
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        train(stack.cfg)
        if loaded:
            hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
        started = time.monotonic()
        stack.start()
        pending, out = set(SERVING), {}
        clients = {n: BusClient(n, stack.cfg, timeout_ms=100, retries=0) for n in SERVING}
        try:
            while pending and time.monotonic() - started < 180:
                for name in sorted(pending):
                    try:
                        clients[name].call("ping")
                    except BusError:
                        continue
                    out[name] = round(time.monotonic() - started, 2)
                    pending.discard(name)
                time.sleep(0.05)
        finally:
            for client in clients.values():
                client.close()
        for name in pending:
            out[name] = float("inf")
        return out
    finally:
        for hog in hogs:
            common.stop(hog)
        stack.remove()


def bench(quick: bool) -> dict[str, Any]:
    runs = 1 if quick else 3
    conf = read_conf()
    idle = [_one_start(False) for _ in range(runs)]
    loaded = [_one_start(True) for _ in range(runs)]
    rows, results = [], {}
    for name in SERVING:
        startsecs = float(conf[name].get("startsecs", "1"))
        worst = max(r[name] for r in loaded)
        results[name] = {"idle_s": [r[name] for r in idle], "loaded_s": [r[name] for r in loaded],
                         "startsecs": startsecs}
        rows.append([name, min(r[name] for r in idle), max(r[name] for r in idle),
                     min(r[name] for r in loaded), worst, startsecs,
                     common.verdict(startsecs >= worst, "covered")])
    common.print_table(f"start → serving, {runs} start(s) each (s)",
                       ["program", "idle min", "idle max", "loaded min", "loaded max",
                        "startsecs", ""], rows)
    return {"runs": runs, "programs": results, **common.metadata(quick)}
