"""How a bus op is declared: its name, its arguments (type, default, range, help) and the
shape of its reply, once — circus's command classes are the model (DESIGN §8).

One declaration has three uses: the server checks every request against it before the
handler runs (``Op.check``), the ``bdt`` CLI builds the verb's arguments from it
(``shared.cli``), and docs/bus.md's op tables are generated from it (``shared.protocol.docs``).
A service's table is made by ``shared.protocol.common.table``, which adds the common ops.
Tests fail when a service's ``op_*`` methods, its table, the CLI or the docs disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from shared.protocol.errors import BAD_ARGS, MessageError
from shared.protocol.events import of_kind

REQUIRED: Any = object()      # an Arg default: the caller must send it

NUMBER = (int, float)


@dataclass(frozen=True)
class Arg:
    """One argument of an op.

    ``kind``: the accepted Python types (a bool is never accepted as an int). ``minimum`` /
    ``maximum``: inclusive bounds for numbers. ``cli``: how the ``bdt`` verb takes it —
    "positional", "option" (``--name``) or "many" (one or more positionals into a list).
    ``unit`` "ms" means epoch milliseconds; the CLI then also accepts an ISO date (UTC).
    """

    name: str
    kind: type | tuple[type, ...]
    help: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    cli: str = "option"
    unit: str = ""

    @property
    def kinds(self) -> tuple[type, ...]:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def type_names(self) -> str:
        return " or ".join("null" if k is type(None) else k.__name__ for k in self.kinds)

    def check(self, value: Any) -> Any:
        """``value`` if it has an accepted type and is in range; MessageError(bad_args)."""
        if not of_kind(value, self.kinds):
            raise MessageError(BAD_ARGS, f"argument {self.name!r} must be {self.type_names()}, "
                                         f"got {type(value).__name__}")
        if isinstance(value, NUMBER) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise MessageError(BAD_ARGS, f"argument {self.name!r} must be finite")
            if self.minimum is not None and value < self.minimum:
                raise MessageError(BAD_ARGS, f"argument {self.name!r} must be ≥ {self.minimum:g}"
                                             f", got {value!r}")
            if self.maximum is not None and value > self.maximum:
                raise MessageError(BAD_ARGS, f"argument {self.name!r} must be ≤ {self.maximum:g}"
                                             f", got {value!r}")
        return value


@dataclass(frozen=True)
class Op:
    """One request/reply op of a service.

    ``verb``: the ``bdt`` command that sends it ("cache get"), or "" when no verb does — then
    ``internal`` says who uses it instead. ``idempotent`` False: applying the request twice
    differs from once (the client never resends it on a timeout).
    """

    name: str
    help: str
    args: tuple[Arg, ...] = ()
    reply: str = "null"
    verb: str = ""
    internal: str = ""
    idempotent: bool = True

    def __post_init__(self) -> None:
        if bool(self.verb) == bool(self.internal):
            raise ValueError(f"op {self.name}: give exactly one of verb or internal")

    def check(self, args: dict[str, Any]) -> dict[str, Any]:
        """The request's arguments checked and completed with defaults; MessageError(bad_args)
        naming the first missing, unknown or mistyped argument."""
        known = {a.name for a in self.args}
        unknown = sorted(repr(k) for k in args if k not in known)  # repr: the caller's text
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise MessageError(BAD_ARGS, f"{self.name}: unknown argument(s) "
                                         f"{', '.join(unknown)}; allowed: {allowed}")
        out: dict[str, Any] = {}
        for arg in self.args:
            if arg.name in args:
                out[arg.name] = arg.check(args[arg.name])
            elif arg.required:
                raise MessageError(BAD_ARGS, f"{self.name}: missing argument {arg.name!r}")
            else:
                out[arg.name] = arg.default
        return out


@dataclass(frozen=True)
class OpTable:
    """The ops of one service, by name (the common ops included)."""

    service: str
    ops: dict[str, Op] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Op:
        return self.ops[name]

    def __contains__(self, name: object) -> bool:
        return name in self.ops

    def __iter__(self):
        return iter(self.ops.values())

    def get(self, name: str) -> Op | None:
        return self.ops.get(name)

