"""``python -m bench [bus|cache ...] [--quick]``: run benchmarks, print tables, write JSON."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench import bus, cache, common

BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {"bus": bus.bench, "cache": cache.bench}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="a short run (about 10x fewer ops)")
    args = parser.parse_args(argv)
    for name in args.names or list(BENCHMARKS):
        start = time.monotonic()
        print(f"\n=== {name}{' (quick)' if args.quick else ''} ===")
        results = BENCHMARKS[name](args.quick)
        results["duration_s"] = round(time.monotonic() - start, 1)
        common.write_json(name, results)
        print(f"  ({results['duration_s']} s)")


if __name__ == "__main__":
    main()
