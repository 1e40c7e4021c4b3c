"""How ``bdt`` prints: JSON, tables fitted to the terminal, sizes, uptimes and command-line
times. The figures themselves are written by ``shared.formatting``, as the reports and the
dashboard write them."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any

from shared.formatting import MIB, UNKNOWN, wrap
from shared.market.bars import ts_text  # noqa: F401 - the CLI prints times with it

MIN_WRAP = 16           # a text column is never wrapped narrower than this


def mib(n: int | None) -> str:
    """Bytes as whole MiB in a narrow column ("-" when unknown): "512M"."""
    return UNKNOWN if n is None else f"{n / MIB:.0f}M"


def terminal_width() -> int | None:
    """``COLUMNS``, or the width of the terminal printed to; None (no limit) into a pipe."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def table(rows: list[list[Any]], header: list[str], width: int | None = None) -> None:
    """Left-aligned columns, two spaces apart, fitted to ``width`` (default: the terminal's)
    by wrapping the widest text columns between words; a cell is never cut."""
    print("\n".join(table_lines(rows, header, width or terminal_width())))


def table_lines(rows: list[list[Any]], header: list[str], width: int | None = None
                ) -> list[str]:
    """The lines ``table`` prints (``width`` None: no limit)."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    if width:
        widths = _fit(cells, widths, width)
    lines = []
    for row in cells:
        parts = [wrap(c, w) if len(c) > w else [c] for c, w in zip(row, widths, strict=True)]
        for k in range(max(len(p) for p in parts)):
            lines.append("  ".join((p[k] if k < len(p) else "").ljust(w)
                                   for p, w in zip(parts, widths, strict=True)).rstrip())
    return lines


def _fit(cells: list[list[str]], widths: list[int], width: int) -> list[int]:
    """Column widths within ``width``: the widest column of text (a cell with a space) is
    narrowed first, never below its longest word or ``MIN_WRAP``; numbers keep theirs."""
    widths = list(widths)
    floors = [max(MIN_WRAP, *(len(w) for row in cells for w in row[i].split()))
              if any(" " in row[i] for row in cells[1:]) else widths[i]
              for i in range(len(widths))]
    while (over := sum(widths) + 2 * (len(widths) - 1) - width) > 0:
        narrowable = [i for i in range(len(widths)) if widths[i] > floors[i]]
        if not narrowable:
            break
        i = max(narrowable, key=lambda j: widths[j])
        widths[i] = max(floors[i], widths[i] - over)
    return widths


def uptime(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
