"""How numbers and text are shown to people — by ``bdt``, the HTML reports and the dashboard's
charts alike, so one figure reads the same everywhere: prices to the market's precision (its tick
when known, else ``SIGNIFICANT`` significant digits), money to cents, thousands separators,
percentages as percentages, never "-0", text wrapped or cut at a word with "…" — never inside a
number. Also JSON, aligned tables, sizes, durations and times for ``bdt``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import textwrap
from decimal import Decimal
from typing import Any

from shared.market.bars import ts_text  # noqa: F401 - the CLI prints times with it

UNKNOWN = "-"           # a figure that is not there
SIGNIFICANT = 6         # digits of a price or quantity whose market step is not known
MAX_DECIMALS = 8        # a satoshi
MIN_WRAP = 16           # a text column is never wrapped narrower than this
MIB = 1 << 20
# d3 formats (Vega-Lite tooltips and axes) matching the functions below
D3_MONEY = ",.2f"
D3_POINTS = ",.2f"      # a figure already in percent
D3_FIGURE = ",.4~r"     # 4 significant digits, never an exponent


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


# --- numbers --------------------------------------------------------------------------------
def number(value: Any, decimals: int = 2, *, signed: bool = False,
           unknown: str = UNKNOWN) -> str:
    """``value`` with thousands separators and ``decimals`` decimals, "+" before a positive one
    when ``signed``; what rounds to zero has no sign ("0.00", never "-0.00"); ``unknown`` for
    None and NaN."""
    if not _finite(value):
        return unknown
    text = f"{value:,.{decimals}f}"
    if not text.lstrip("-").replace("0", "").strip(".,"):
        return f"{0:.{decimals}f}"
    return f"+{text}" if signed and value > 0 else text


def step_decimals(step: float) -> int:
    """The decimals a market step shows: 0.01 → 2, 0.5 → 1, 1e-08 → 8, 10 → 0."""
    return max(0, -int(Decimal(repr(float(step))).normalize().as_tuple().exponent))


def _significant(value: float, least: int) -> int:
    """Decimals that show ``SIGNIFICANT`` significant digits of ``value`` (≥ ``least``)."""
    if not value:
        return least
    return max(least, min(MAX_DECIMALS, SIGNIFICANT - 1 - math.floor(math.log10(abs(value)))))


def price(value: Any, tick: float | None = None, *, signed: bool = False) -> str:
    """A price to the market's tick; without one, ``SIGNIFICANT`` significant digits and at
    least cents: 42657.5407361942 → "42,657.54", 0.000123456 → "0.00012346"."""
    if not _finite(value):
        return UNKNOWN
    decimals = step_decimals(tick) if tick else _significant(value, 2)
    return number(value, decimals, signed=signed)


def quantity(value: Any, step: float | None = None, *, signed: bool = False) -> str:
    """A quantity to the market's lot step; without one, ``SIGNIFICANT`` significant digits
    and no trailing zeros: 0.1 → "0.1", 20000 → "20,000", 0.000123456 → "0.000123456"."""
    if not _finite(value):
        return UNKNOWN
    if step:
        return number(value, step_decimals(step), signed=signed)
    text = number(value, _significant(value, 0), signed=signed)
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: Any, *, signed: bool = False) -> str:
    """An amount of the quote currency, to cents: "10,120.50", "+120.50"."""
    return number(value, 2, signed=signed)


def percent(fraction: Any, decimals: int = 2, *, signed: bool = False) -> str:
    """A fraction as a percentage: 0.0123 → "1.23 %" ("+1.23 %" when ``signed``)."""
    text = number(fraction * 100 if _finite(fraction) else None, decimals, signed=signed)
    return text if text == UNKNOWN else f"{text} %"


def count(value: Any) -> str:
    """A whole number with thousands separators: 20000 → "20,000"."""
    return number(value, 0)


def duration(seconds: Any, unknown: str = UNKNOWN) -> str:
    """Seconds for people: "0.8 s", "42 s", "3 min 05 s", "2 h 07 min"."""
    if not _finite(seconds):
        return unknown
    if seconds < 10:
        return f"{number(seconds, 1)} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600:,} h {whole % 3600 // 60:02d} min"


def size(n: Any, unknown: str = UNKNOWN) -> str:
    """Bytes as MiB with separators: "1,536 MiB"."""
    return unknown if not _finite(n) else f"{number(n / MIB, 0)} MiB"


def mib(n: int | None) -> str:
    """Bytes as whole MiB in a narrow column ("-" when unknown): "512M"."""
    return UNKNOWN if n is None else f"{n / MIB:.0f}M"


PERCENT_WORDS = {"return", "drawdown", "exposure", "rate", "volatility"}
MONEY_WORDS = {"equity", "fees", "trade", "expectancy", "pnl", "cash", "value", "cost"}


def figure(key: str, value: Any) -> str:
    """A report's figure ``key`` as text: returns, drawdowns and rates as percentages, prices
    as ``price``, amounts to cents, counts with separators, ratios to two decimals, ``*_ts``
    as UTC times, ``*_days``, ``*_min`` and ``*_s`` as durations, a withheld figure with its
    reason, a dict as "key: value, …" ("none" when empty)."""
    if isinstance(value, dict) and "withheld" in value:
        return f"withheld: {value['withheld']}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {figure(k, v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(figure(key, v) for v in value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not _finite(value):
        return UNKNOWN if value is None or isinstance(value, float) else str(value)
    if key.endswith("_ts"):
        return ts_text(value)
    if key.endswith("_days") or key == "days":
        return f"{number(value, 1)} days"
    if key.endswith("_min"):
        return duration(value * 60)
    if key.endswith("_s") and not key.endswith("_per_s"):
        return duration(value)
    if key.endswith("_bytes"):
        return size(value)
    words = set(key.split("_"))
    if "price" in words or key == "mark":
        return price(value)
    if words & PERCENT_WORDS:
        return percent(value)
    if words & MONEY_WORDS:
        return money(value)
    if isinstance(value, int):
        return count(value)
    return number(value, 2)


def axis(lo: float, hi: float, ticks: int = 5) -> list[tuple[float, str]]:
    """Round values between ``lo`` and ``hi`` (steps of 1, 2 or 5 × 10^k, about ``ticks`` of
    them) with labels of one number of decimals: "9,950", "10,000", "10,050" — never
    "1.01e+04" beside "9,979", never "-0"."""
    span = hi - lo
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if span <= 0:
        return [(lo, number(lo, _significant(lo, 0) if abs(lo) < 1 else 2))]
    raw = span / max(1, ticks - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    first = math.ceil(lo / step - 1e-9)
    values = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return [(v, number(v, decimals)) for v in values]


# --- text -----------------------------------------------------------------------------------
def wrap(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` characters, broken between words only (a word
    longer than ``width`` keeps its own line whole)."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def clip(text: str, width: int) -> str:
    """``text`` in about ``width`` characters: cut after the last whole word that fits, with
    "…"; never inside a word or a number (a first word longer than ``width`` is kept whole)."""
    if len(text) <= width:
        return text
    head = text[:max(1, width - 1) + 1]
    space = head.rfind(" ")
    if space <= 0:
        return text.split(" ", 1)[0] + ("…" if " " in text else "")
    return text[:space].rstrip(" ,;:") + "…"


def terminal_width() -> int | None:
    """``COLUMNS``, or the width of the terminal printed to; None (no limit) into a pipe."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return None


# --- bdt's output ---------------------------------------------------------------------------
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
