"""What each stream's messages carry, declared once (who publishes which stream:
``shared.bus.endpoints.STREAMS``; the envelope, ``{v, type}``: ``shared.bus.codec``).

- ``bars``: one closed bar. The bot publishes ``Bar.to_dict()``; history and the predictor
  read it with ``Bar.from_dict`` (``shared.market.bars``).
- ``predictions``: the prediction made on one bar — the model set's outputs and the symbol —
  read by the bot with ``Prediction.from_dict`` (``shared.trading.types``). When the predictor
  cannot predict a bar (no model, features still warming up) it says so at once in the
  *skipped* form, ``{symbol, bar_time, skipped: why}``, so the bot decides without waiting;
  the bot tells the two apart by the ``skipped`` field.
- ``events``: ``{kind, ...fields}``, every kind declared in ``shared.protocol.events``.

``tests/test_streams.py`` holds the builders and parsers above to these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.protocol.events import KINDS as EVENT_KINDS
from shared.protocol.events import of_kind

NUMBER = (int, float)
SKIPPED = "skipped"        # the field that marks a prediction's skipped form


@dataclass(frozen=True)
class Payload:
    """One form of a stream's message: its fields and their types (the type rule of events
    and op arguments: a bool is not a number). ``optional``: fields a reader defaults."""

    stream: str
    form: str
    help: str
    fields: dict[str, type | tuple[type, ...]]
    optional: tuple[str, ...] = ()

    def problems(self, message: dict[str, Any]) -> list[str]:
        """What is wrong with ``message`` as this form: a missing or mistyped field (the
        envelope's ``v`` and ``type`` and any extra field are not this form's concern)."""
        out = []
        for name, kinds in self.fields.items():
            if name not in message:
                if name not in self.optional:
                    out.append(f"{self.stream} ({self.form}): no field {name!r}")
            elif not of_kind(message[name], kinds):
                out.append(f"{self.stream} ({self.form}): field {name!r} must be "
                           f"{getattr(kinds, '__name__', kinds)}, got {message[name]!r}")
        return out


BAR = Payload("bars", "bar", "one closed OHLCV bar; trades defaults to 0",
              {"symbol": str, "ts": int, "open": NUMBER, "high": NUMBER, "low": NUMBER,
               "close": NUMBER, "volume": NUMBER, "trades": int}, optional=("trades",))
PREDICTION = Payload("predictions", "prediction", "the prediction made on the bar at bar_time",
                     {"symbol": str, "bar_time": int, "expected_return": NUMBER,
                      "p_up": NUMBER, "volatility": NUMBER, "model_version": str})
SKIPPED_PREDICTION = Payload("predictions", SKIPPED, "no prediction for the bar at bar_time, "
                             "and why (no model, features warming up)",
                             {"symbol": str, "bar_time": int, SKIPPED: str})

# Every stream's forms; events are {kind, ...fields} with each kind's fields in EVENT_KINDS.
PAYLOADS: dict[str, tuple[Payload, ...]] = {
    "bars": (BAR,),
    "predictions": (PREDICTION, SKIPPED_PREDICTION),
    "events": tuple(Payload("events", kind.name, kind.help, {"kind": str, **kind.fields})
                    for kind in EVENT_KINDS.values()),
}
