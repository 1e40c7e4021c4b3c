"""Benchmarks that cannot rot (issue 27 item 4, begun): a bench module that crashes fails
the suite. `python -m bench bus` crashed at HEAD (`KeyError: 'result'`: its echo service
declared no op) and nobody saw the bus's round trip drift. Each runs here in its quick mode,
asserting it produces its figures — never their values (those are `make bench`'s)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO


def run_bench(name: str, timeout: float) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench", name, "--quick"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((REPO / "bench-results" / f"{name}.json").read_text())


def test_bench_bus_produces_its_figures():
    figures = run_bench("bus", 120)
    for path in ("raw", "req_to_bus", "bus"):
        assert figures[path]["p50_us"] > 0, figures[path]
    assert "overhead_p50_pct" in figures
