"""Every database file a service keeps under ``<var>/data``, declared once: its owner, what it
holds, and whether it has history (a corrupt one refuses, left untouched, with the way out)
or is derived (a corrupt one is moved aside and made anew from config or other data).
`bdt doctor` checks each; ``shared.storage.sqlite`` does the moving aside."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from shared.config import Config
from shared.storage.sqlite import CORRUPT_SUFFIX, REPLACED_SUFFIX, read_only


@dataclass(frozen=True)
class Store:
    name: str           # path under <var>/data
    owner: str          # the program that writes it
    what: str           # what it holds, for people
    history: bool       # True: losing it loses records; False: rebuilt when moved aside

    def path(self, cfg: Config) -> Path:
        return cfg.var_dir / "data" / self.name


STORES = (
    Store("trading.db", "bot", "trading state", True),
    Store("jobs.db", "scheduler", "job runs", True),
    Store("market/market.db", "history", "market store (recent bars)", True),
    Store("scheduler.db", "scheduler", "APScheduler job store", False),
    Store("monitor.db", "monitor", "monitor history", False),
)


def check(path: Path) -> str | None:
    """Why the database at ``path`` is unusable (opened read-only, ``PRAGMA quick_check``),
    or None when it is fine or absent."""
    if not path.exists():
        return None
    try:
        with read_only(path) as conn:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if result == "ok" else f"integrity check: {result}"


def set_aside(cfg: Config) -> list[Path]:
    """Files moved aside: corrupt stores and files found where a store was replaced."""
    data = cfg.var_dir / "data"
    found = [p for pattern in (f"*{CORRUPT_SUFFIX}*", f"*{REPLACED_SUFFIX}*")
             for p in data.rglob(pattern) if not p.name.endswith(("-wal", "-shm"))]
    return sorted(found)
