"""``python -m bench [bus|cache ...] [--quick]``: run benchmarks, print tables, write JSON."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import backtest, bus, cache, common, monitor, pipeline, startup, wakeup

BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "bus": bus.bench, "cache": cache.bench, "wakeup": wakeup.bench, "pipeline": pipeline.bench,
    "backtest": backtest.bench, "walkforward": backtest.bench_walkforward, "monitor": monitor.bench,
    "startup": startup.bench}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run, of: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a short run (10x fewer requests)")
    parser.add_argument("--soak-minutes", type=float, default=30.0,
                        help="how long the pipeline benchmark replays before reading memory")
    args = parser.parse_args(argv)
    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C: every child is stopped by the
    # finally blocks instead of being orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        start = time.monotonic()
        print(f"\n=== {name}{' (quick)' if args.quick else ''} ===")
        if name == "pipeline":
            results = pipeline.bench(args.quick, args.soak_minutes)
        else:
            results = BENCHMARKS[name](args.quick)
        results["duration_s"] = round(time.monotonic() - start, 1)
        common.write_json(name, results)
        print(f"  ({results['duration_s']} s)")


if __name__ == "__main__":
    main()
