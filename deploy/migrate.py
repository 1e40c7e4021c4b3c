"""State migration for a release about to go live, run on the target in the release's own venv
while no program of either release runs (``python -m deploy.migrate --var DIR --backup DIR``).

The project's stores migrate themselves when they are opened (``CREATE TABLE IF NOT EXISTS``,
``ADDED_COLUMNS``): here every store that holds money or job records is first copied with
SQLite's online backup (so a release that turns out wrong can be rolled back *and* its state
restored by hand), then opened and closed with this release's code — a schema it cannot use
fails the deploy here, before ``current`` is switched, instead of in the bot at its first bar.
The market store (Parquet partitions + SQLite) and the monitor's history check themselves at
open and are not copied (large, and rebuilt or refilled from the feed).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.jobs.runs import JobRuns
from shared.storage.trading_state import TradingDB

STORES: dict[str, Callable[[Path], Any]] = {"trading.db": TradingDB, "jobs.db": JobRuns}


def backup(path: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(path), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def migrate(var: Path, backup_dir: Path) -> list[str]:
    """Back up and open every existing store; what was done, one line each."""
    done = []
    for name, opener in STORES.items():
        path = var / "data" / name
        if not path.exists():
            continue
        backup(path, backup_dir / name)
        opener(path).close()
        done.append(f"{name}: backed up to {backup_dir / name}, schema up to date")
    return done or ["no state yet: nothing to migrate"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--var", type=Path, required=True)
    parser.add_argument("--backup", type=Path, required=True)
    args = parser.parse_args()
    try:
        lines = migrate(args.var, args.backup)
    except (sqlite3.Error, RuntimeError) as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
