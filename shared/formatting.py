"""How numbers and text are shown to people — by ``bdt``, the HTML reports and the dashboard
alike, so one figure reads the same everywhere: prices to the market's precision (its tick when
known, else ``SIGNIFICANT`` significant digits), money to cents, thousands separators,
percentages as percentages, never "-0", text wrapped or cut at a word with "…" — never inside a
number. Light on purpose: the batch programs and the dashboard import it without the command
line (``shared.cli.render`` prints ``bdt``'s tables with it)."""

from __future__ import annotations

import math
import numbers
import textwrap
from decimal import Decimal
from typing import Any

from shared.market.bars import ts_text

UNKNOWN = "-"           # a figure that is not there
SIGNIFICANT = 6         # digits of a price or quantity whose market step is not known
MAX_DECIMALS = 8        # a satoshi
MIB = 1 << 20
D3_FIGURE = ",.4~r"     # a Vega-Lite format: 4 significant digits, never an exponent


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
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
    if isinstance(value, numbers.Integral):
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


# --- text --------------------------------------------------------------------------------------
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
