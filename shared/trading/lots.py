"""Quantities as whole lots. A venue takes an order's quantity as a decimal multiple of its lot
step; floats cannot hold most such multiples exactly (5 × 1e-6 is 4.999999999999999e-06), and
a venue that floors to its precision then sends one lot less than held. So every quantity the
engine computes is made *canonical*: the float nearest the exact decimal ``n × step``, whose
shortest repr is that decimal, and which therefore goes through ``to_step`` (and ccxt's
``amount_to_precision``) unchanged. Lot counts are worked out in ``Decimal`` on the floats'
shortest reprs, never by float division.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

QTY_DECIMALS = 12      # a book's quantities are kept to this many decimals (no float dust)


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def to_step(value: float, step: float, up: bool = False) -> float:
    """``value`` to a multiple of ``step``, DOWN (or up, ``up=True``); anything not > 0 gives
    0.0; a ``step`` not > 0 (no such rule) leaves ``value`` as it is.

    Done in decimal on the floats' shortest reprs, so 0.3 with step 0.1 is 0.3 (float division
    would give 2.9999999999999996 steps and silently drop one)."""
    if not (math.isfinite(value) and value > 0):
        return 0.0
    if not step > 0:
        return value
    d_step = _dec(step)
    steps = (_dec(value) / d_step).to_integral_value(
        rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return float(steps * d_step)


def floor_to_step(qty: float, step: float) -> float:
    """A quantity rounded DOWN to a multiple of ``step`` (``to_step``)."""
    return to_step(qty, step)


def lots(qty: float, step: float) -> int:
    """The whole number of lots of ``step`` nearest ``qty`` (signed; half to even). A book's
    quantity that float sums left a hair off the grid (3.0000000000000004e-05 with step 1e-5)
    counts as the lots it stands for. ValueError for a step not > 0 or a qty not finite."""
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"lot step must be a positive finite number, got {step!r}")
    if not math.isfinite(qty):
        raise ValueError(f"quantity must be finite, got {qty!r}")
    return int((_dec(qty) / _dec(step)).to_integral_value(rounding=ROUND_HALF_EVEN))


def lots_qty(count: int, step: float) -> float:
    """``count`` lots of ``step`` as the canonical float: the one nearest the exact decimal
    ``count × step`` (5 lots of 1e-6 is 5e-06, not 4.999999999999999e-06)."""
    return float(Decimal(count) * _dec(step))


def clean_qty(qty: float) -> float:
    """A book's quantity without float dust (``QTY_DECIMALS`` decimals): 0.1 + 0.2 is 0.3,
    0.1 − 0.0001 is 0.0999. Finer than any venue's lot step."""
    return round(qty, QTY_DECIMALS) + 0.0       # + 0.0: no -0.0
