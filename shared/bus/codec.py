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


def pack(obj: Any) -> bytes:
    """msgpack bytes of ``obj``. A value msgpack cannot carry (an integer outside
    −2**63 … 2**64−1, an object of another type) is MessageError(bad_args) naming it —
    never an OverflowError or TypeError from deep inside msgpack."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except OverflowError:
        raise MessageError(BAD_ARGS, "an integer outside msgpack's range (-2**63 … 2**64-1) "
                                     "cannot be sent; send it as a string") from None
    except (TypeError, ValueError) as exc:
        raise MessageError(BAD_ARGS, f"cannot be sent over the bus: {exc}") from None


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MessageError(BAD_MESSAGE, f"not msgpack: {type(exc).__name__}: {exc}") from None


def request(op: str, args: dict[str, Any] | None = None) -> bytes:
    return pack({"v": VERSION, "type": "request", "op": op, "args": args or {}})


def reply_ok(result: Any = None) -> bytes:
    return pack({"v": VERSION, "type": "reply", "ok": True, "result": result})


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
    return pack({"v": VERSION, "type": stream, **fields})


def parse_stream(data: bytes, stream: str) -> dict[str, Any]:
    return _envelope(data, stream)
