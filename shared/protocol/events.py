"""Every kind of message on the ``events`` stream, with its payload's fields, declared once.

An event is ``{kind: str, ...fields}``. Publishers build it with ``event()``, which refuses an
unknown kind or a missing or mistyped field; subscribers read it with ``parse_event()``, which
says what is wrong with a malformed one (they log it and go on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The monitor's resource modes (seed 000 §7.2), in order of severity.
MODES = ("normal", "low_resource", "critical")
# How bad an alert is, in order.
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class EventKind:
    name: str
    help: str
    fields: dict[str, type | tuple[type, ...]]
    choices: dict[str, tuple[str, ...]] | None = None


KINDS: dict[str, EventKind] = {k.name: k for k in (
    EventKind("mode", "the monitor's resource mode changed; the bot opens nothing in critical",
              {"mode": str}, {"mode": MODES}),
    EventKind("model_promoted", "a model version was promoted; the predictor loads it",
              {"version": str}),
    EventKind("job_started", "the scheduler started a batch job",
              {"job": str, "run_id": int, "trigger": str, "slot": str}),
    EventKind("job_finished", "a batch job ended with its outcome",
              {"job": str, "run_id": int, "outcome": str, "duration_s": (int, float)}),
    EventKind("alert", "a service raised an alert (`raise_alert`): `alert` is its kind, "
              "declared with its figures in shared/protocol/alerts.py; `source` the service; "
              "`subject` the program, slice or service. The monitor is the one sink: "
              "monitor.db, `bdt alerts`, metrics, the webhook (docs/monitor.md)",
              {"alert": str, "severity": str, "subject": str, "message": str, "figures": dict,
               "source": str},
              {"severity": SEVERITIES}),
)}


class EventError(ValueError):
    """An event of an unknown kind, or with a missing, mistyped or out-of-range field."""


def of_kind(value: Any, kinds: type | tuple[type, ...]) -> bool:
    """``isinstance(value, kinds)``, except that a bool is not taken for an int or a float
    unless ``bool`` is one of ``kinds`` (msgpack's true is not the number 1). The type rule of
    events and of op arguments."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _check(kind: str, fields: dict[str, Any]) -> EventKind:
    spec = KINDS.get(kind)
    if spec is None:
        raise EventError(f"unknown event kind {kind!r}; known: {', '.join(KINDS)}")
    for name, types in spec.fields.items():
        value = fields.get(name)
        if not of_kind(value, types):
            raise EventError(f"{kind} event: field {name!r} must be "
                             f"{getattr(types, '__name__', types)}, got {value!r}")
        allowed = (spec.choices or {}).get(name)
        if allowed and value not in allowed:
            raise EventError(f"{kind} event: field {name!r} must be one of "
                             f"{', '.join(allowed)}, got {value!r}")
    return spec


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """The payload of one event, checked against its declaration (EventError)."""
    _check(kind, fields)
    return {"kind": kind, **fields}


def parse_event(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(kind, fields) of a received event; EventError says what is wrong with it."""
    kind = fields.get("kind")
    if not isinstance(kind, str):
        raise EventError(f"event without a string 'kind': {kind!r}")
    _check(kind, fields)
    return kind, fields
