"""Metrics and metadata as strict JSON: a value that is not a finite number is stored as null,
with the reason beside it.

The convention, everywhere model metadata and metrics are written: a metric ``name`` that is
null (or a status that is false, such as GARCH's ``converged``) may have a sibling
``name_why``, a short text saying why. ``finite_json`` adds that text for every NaN or ±inf it
replaces (``"not finite: nan"``) unless the producer already wrote a more specific one. So
``json.dumps(..., allow_nan=False)`` never fails on a metric, and readers (``bdt models
show``, the dashboard) see null and why instead of a crash or a bare ``NaN``, which is not
JSON. Kept free of numpy so that the registry stays light to import.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

WHY = "_why"


def why_key(name: str) -> str:
    """The key holding the reason why metric ``name`` is null (or a status is false)."""
    return f"{name}{WHY}"


def finite_json(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, scalars) in which every float that is NaN or
    ±inf is None; in a dict, its key gets a ``<key>_why`` reason unless one is there already.
    numpy's scalars become Python's int and float; anything else is left as it is."""
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            bad = _not_finite(value)
            out[key] = None if bad else finite_json(value)
            if bad and why_key(str(key)) not in obj:
                out[why_key(str(key))] = f"not finite: {bad}"
        return out
    if isinstance(obj, (list, tuple)):
        return [None if _not_finite(v) else finite_json(v) for v in obj]
    if isinstance(obj, bool) or not isinstance(obj, Real):
        return obj
    return int(obj) if isinstance(obj, Integral) else float(obj)


def _not_finite(value: Any) -> str | None:
    """'nan', 'inf' or '-inf' for a non-finite real number (numpy's too); None otherwise."""
    if isinstance(value, (bool, Integral)) or not isinstance(value, Real):
        return None
    number = float(value)
    return None if math.isfinite(number) else repr(number)
