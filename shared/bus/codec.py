"""The one wire format: a msgpack map with a version and a type.

Requests:  {v: 1, type: "request", op: str, args: map}
Replies:   {v: 1, type: "reply", ok: true, result: any}
           {v: 1, type: "reply", ok: false, error: {code: str, message: str}}
Streams:   {v: 1, type: <stream>, ...fields}   sent as [topic, payload]
"""

from __future__ import annotations

from typing import Any

import msgpack

from shared.protocol.errors import BAD_ARGS, BAD_MESSAGE, BAD_VERSION, MessageError

VERSION = 1
INT_MIN, INT_MAX = -(2**63), 2**64 - 1     # the integers msgpack carries
INT_RANGE = "msgpack's range (-2**63 … 2**64-1)"
MAX_DEPTH = 511                            # msgpack's own nesting limit (DEFAULT_RECURSE_LIMIT)
_PLAIN = (type(None), bool, float, bytes, bytearray, memoryview, msgpack.ExtType,
          msgpack.Timestamp)


def pack(obj: Any, what: str = "the message", part: Any = None) -> bytes:
    """msgpack bytes of ``obj``. A value msgpack cannot carry (an integer outside
    −2**63 … 2**64−1, an object of another type, a string that is not Unicode text, nesting
    past 511 levels) is MessageError(bad_args) naming it and where it is, under ``what``
    (``part`` of ``obj`` when given: the result in a reply's envelope) — never an
    OverflowError or TypeError from deep inside msgpack."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        found = unpackable(obj if part is None else part, what)
        raise MessageError(BAD_ARGS, found or f"{what} cannot be sent over the bus: "
                                              f"{type(exc).__name__}: {exc}") from None


def unpackable(obj: Any, where: str = "the value", depth: int = 0) -> str | None:
    """Why ``obj`` cannot travel over the bus, naming the first value that cannot and its
    place (``result['rows'][3]['qty']``), or None when it can. Also refuses what msgpack
    would send but no reader could decode: a map key that is a list or a map (a tuple)."""
    if depth > MAX_DEPTH:
        place = where if len(where) <= 80 else where[:79] + "…"
        return f"{place}: nested more than {MAX_DEPTH} levels deep"
    if isinstance(obj, _PLAIN):
        return None
    if isinstance(obj, int):
        if INT_MIN <= obj <= INT_MAX:
            return None
        return f"{where}: the integer {obj} is outside {INT_RANGE}"
    if isinstance(obj, str):
        try:
            obj.encode()
        except UnicodeEncodeError as exc:
            return f"{where}: {shown(obj)} is not Unicode text ({exc.reason} at {exc.start})"
        return None
    if isinstance(obj, list | tuple):
        for i, item in enumerate(obj):     # a loop, not a generator: one frame a level
            why = unpackable(item, f"{where}[{i}]", depth + 1)
            if why:
                return why
        return None
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, list | tuple | dict):
                return f"{where}: the map key {shown(key)} is a {type(key).__name__}; a key " \
                       "must be a string, a number or bytes"
            why = unpackable(key, f"{where} key {shown(key)}", depth + 1) or \
                unpackable(value, f"{where}[{shown(key)}]", depth + 1)
            if why:
                return why
        return None
    return f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} ({shown(obj)}) " \
           "cannot be sent over the bus"


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: for naming a value in an error."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MessageError(BAD_MESSAGE, f"not msgpack: {type(exc).__name__}: {exc}") from None


def request(op: str, args: dict[str, Any] | None = None) -> bytes:
    args = args or {}
    return pack({"v": VERSION, "type": "request", "op": op, "args": args}, "args", args)


def reply_ok(result: Any = None) -> bytes:
    """A reply carrying ``result``; MessageError(bad_args) naming the part of the result
    msgpack cannot carry (the server answers that, never ``internal``)."""
    return pack({"v": VERSION, "type": "reply", "ok": True, "result": result}, "result", result)


def reply_error(code: str, message: str) -> bytes:
    return pack(
        {"v": VERSION, "type": "reply", "ok": False, "error": {"code": code, "message": message}}
    )


def _envelope(data: bytes, expected_type: str | None) -> dict[str, Any]:
    msg = unpack(data)
    if not isinstance(msg, dict):
        raise MessageError(BAD_MESSAGE, f"expected a map, got {type(msg).__name__}")
    if msg.get("v") != VERSION:
        raise MessageError(BAD_VERSION, f"expected v={VERSION}, got v={msg.get('v')!r}")
    if expected_type is not None and msg.get("type") != expected_type:
        raise MessageError(BAD_MESSAGE, f"expected type {expected_type!r}, got {msg.get('type')!r}")
    return msg


def parse_request(data: bytes) -> tuple[str, dict[str, Any]]:
    msg = _envelope(data, "request")
    op, args = msg.get("op"), msg.get("args", {})
    if not isinstance(op, str) or not op:
        raise MessageError(BAD_MESSAGE, f"'op' must be a non-empty string, got {op!r}")
    if not isinstance(args, dict):
        raise MessageError(BAD_ARGS, f"'args' must be a map, got {type(args).__name__}")
    return op, args


def parse_reply(data: bytes) -> dict[str, Any]:
    msg = _envelope(data, "reply")
    if not isinstance(msg.get("ok"), bool):
        raise MessageError(BAD_MESSAGE, "reply without a boolean 'ok'")
    return msg


def stream_message(stream: str, fields: dict[str, Any]) -> bytes:
    return pack({"v": VERSION, "type": stream, **fields}, f"the {stream} message", fields)


def parse_stream(data: bytes, stream: str) -> dict[str, Any]:
    return _envelope(data, stream)
