"""Every kind of alert, declared once: its usual severity, what it means, which services raise
it, and the figures every alert of the kind carries (docs/monitor.md, "Alerts").

Any service raises an alert with ``raise_alert(service, kind, subject, message, **figures)``:
it is checked against the kind's declaration (``AlertError`` for an undeclared kind, a bad
severity or a missing or mistyped figure: a programming error) and published as an ``alert``
event on the ``events`` stream. The monitor subscribes to that stream and is the one sink
(services/monitor/alerts.py): monitor.db and ``bdt alerts``, ``bdt_alerts_total{kind}``, the
webhook within the per-kind rate limit; the same kind and subject from two sources within that
interval is one alert. The monitor raises its own alerts through the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.protocol.events import SEVERITIES, event, of_kind

NUMBER = (int, float)
MAYBE_INT = (int, type(None))
MAYBE_NUMBER = (int, float, type(None))
# what a figure may hold: what msgpack and JSON both carry as such
PLAIN = (str, int, float, bool, type(None), list, tuple, dict)


@dataclass(frozen=True)
class AlertKind:
    """One kind: ``severity`` is the usual one (a raiser may name another, e.g. ``info`` for
    "reachable again"); ``sources`` the services that raise it; ``fields`` the figures every
    alert of the kind carries (more are allowed)."""

    name: str
    severity: str
    description: str
    sources: tuple[str, ...]
    fields: dict[str, type | tuple[type, ...]] = field(default_factory=dict)


KINDS: dict[str, AlertKind] = {k.name: k for k in (
    AlertKind("mode", "warning", "the resource mode changed (info back to normal, critical "
              "into critical); subject bitdaytrader", ("monitor",),
              {"old": str, "new": str, "memory_bytes": MAYBE_INT, "cpu_pct": MAYBE_NUMBER}),
    AlertKind("high_memory", "warning", "the tree's process memory crossed "
              "monitor.alert_memory_mb; subject bitdaytrader", ("monitor",),
              {"memory_bytes": int, "threshold_bytes": int}),
    AlertKind("high_cpu", "warning", "the tree's CPU use crossed monitor.alert_cpu_pct of its "
              "quota; subject bitdaytrader", ("monitor",),
              {"cpu_pct": NUMBER, "threshold_pct": NUMBER}),
    AlertKind("restart", "warning", "a program restarted through supervisord before the kernel "
              "could OOM-kill it (why: over_cap_fraction or leak); subject the program",
              ("monitor",), {"why": str, "pid": MAYBE_INT}),
    AlertKind("restart_failed", "critical", "a restart or stop through supervisord failed; "
              "subject the program", ("monitor",), {"action": str, "error": str}),
    AlertKind("restart_held", "warning", "a program over budget not restarted: never_restart, "
              "the monitor itself, or within its cooldown (critical); subject the program",
              ("monitor",), {"why": str, "held": str}),
    AlertKind("leak", "warning", "a program's memory grows steadily, its cap further than "
              "monitor.leak_horizon_s; subject the program", ("monitor",),
              {"growth_mib_per_h": NUMBER, "r2": NUMBER, "eta_s": MAYBE_NUMBER}),
    AlertKind("oom_kill", "critical", "the kernel OOM-killed a process at its slice's cap, seen "
              "by the monitor (the slice's count rose) and, for a batch job, by the scheduler; "
              "subject the slice", ("monitor", "scheduler"),
              {"cap_bytes": MAYBE_INT, "memory_peak": MAYBE_INT}),
    AlertKind("crash", "warning", "a program went EXITED, BACKOFF or FATAL (critical), or got "
              "a new pid the monitor did not cause; subject the program", ("monitor",),
              {"state": str}),
    AlertKind("critical_stop", "warning", "a batch program stopped through supervisord, still "
              "running in critical mode; subject the program", ("monitor",),
              {"pid": MAYBE_INT, "critical_for_s": NUMBER}),
    AlertKind("supervisor", "critical", "supervisord unreachable (info: reachable again); "
              "subject supervisord", ("monitor",)),
    AlertKind("monitor", "warning", "the monitor's own trouble: its database, its metrics "
              "port, an undeclared alert received; subject what failed", ("monitor",)),
    AlertKind("metrics_listening", "info", "the metrics endpoint listens again after its port "
              "was busy; subject metrics", ("monitor",),
              {"port": int, "attempts": int, "waited_s": NUMBER}),
    AlertKind("book_mismatch", "critical", "live: the book and the exchange account disagree "
              "beyond bot.balance_tolerance; nothing is opened; subject bot", ("bot",),
              {"book_cash": NUMBER, "book_qty": NUMBER, "exchange_cash": NUMBER,
               "exchange_qty": NUMBER}),
    AlertKind("exchange_unreachable", "critical", "live: the exchange's balances are unknown "
              "or not yet the book's; nothing is opened; subject bot", ("bot",),
              {"book_cash": NUMBER, "book_qty": NUMBER}),
    AlertKind("order_unresolved", "critical", "live: an order still unresolved after "
              "bot.order_alert_s; nothing is opened until it is; subject bot", ("bot",),
              {"client_id": str, "status": str, "age_s": NUMBER}),
)}


class AlertError(ValueError):
    """An alert of an undeclared kind, or with a bad severity, subject or figure."""


class AlertPublisher(Protocol):
    """What raises an alert: a service (its ``name`` is the alert's source)."""

    name: str

    def publish(self, stream: str, fields: dict[str, Any]) -> None: ...


def check_alert(fields: dict[str, Any]) -> AlertKind:
    """The declaration of an ``alert`` event's fields; AlertError says what does not fit it."""
    spec = KINDS.get(fields.get("alert"))       # type: ignore[arg-type]
    if spec is None:
        raise AlertError(f"undeclared alert kind {fields.get('alert')!r}; "
                         f"declared: {', '.join(KINDS)}")
    if fields.get("severity") not in SEVERITIES:
        raise AlertError(f"{spec.name}: severity must be one of {', '.join(SEVERITIES)}, "
                         f"got {fields.get('severity')!r}")
    if not isinstance(fields.get("subject"), str) or not fields["subject"]:
        raise AlertError(f"{spec.name}: the subject must be a non-empty string")
    figures = fields.get("figures")
    if not isinstance(figures, dict):
        raise AlertError(f"{spec.name}: figures must be a dict, got {figures!r}")
    for name, types in spec.fields.items():
        if name not in figures or not of_kind(figures[name], types):
            raise AlertError(f"{spec.name}: figure {name!r} must be "
                             f"{getattr(types, '__name__', types)}, got {figures.get(name)!r}")
    odd = [k for k, v in figures.items() if not isinstance(k, str) or not isinstance(v, PLAIN)]
    if odd:
        raise AlertError(f"{spec.name}: figures {odd} are not plain values")
    return spec


def alert_event(source: str, kind: str, subject: str, message: str, /, *,
                severity: str | None = None, **figures: Any) -> dict[str, Any]:
    """The checked ``alert`` event (AlertError, or EventError for its envelope)."""
    spec = KINDS.get(kind)
    fields = {"alert": kind, "severity": severity or (spec.severity if spec else ""),
              "subject": subject, "message": message, "figures": figures, "source": source}
    check_alert(fields)
    return event("alert", **fields)


def raise_alert(service: AlertPublisher, kind: str, subject: str, message: str, /, *,
                severity: str | None = None, **figures: Any) -> dict[str, Any]:
    """Raise one alert: checked against its kind's declaration and published on ``events``
    from ``service`` (its name is the source); the event."""
    fields = alert_event(service.name, kind, subject, message, severity=severity, **figures)
    service.publish("events", fields)
    return fields
