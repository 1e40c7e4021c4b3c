"""How ``bdt`` prints: JSON, aligned tables, sizes, durations and times."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def table(rows: list[list[Any]], header: list[str]) -> None:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def mib(n: int | None) -> str:
    """Bytes as whole MiB ("-" when unknown)."""
    return "-" if n is None else f"{n / (1 << 20):.0f}M"


def uptime(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def ts_text(ms: float | None, seconds: bool = False) -> str:
    """Epoch ms as 'YYYY-MM-DD HH:MM' UTC ('…:SS' with ``seconds``); '-' for None."""
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime(
        "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def parse_when(text: str) -> int:
    """A time on the command line: epoch ms, or an ISO date/time (UTC unless it says)."""
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected epoch ms or an ISO date such as 2026-11-01") from None
    return int(when.replace(tzinfo=when.tzinfo or dt.UTC).timestamp() * 1000)
