"""Every error code a server may answer with, declared once.

``BAD_REQUEST_CODES`` are the caller's fault (the client raises ``BadRequest``); the rest are
the server's or the situation's (``RemoteError``). A service-specific code (``not_trading``,
``no_model``) is declared here too, so the docs and the CLI can list them all.
"""

from __future__ import annotations

BAD_MESSAGE = "bad_message"       # not msgpack, not a map, no op
BAD_VERSION = "bad_version"       # envelope version other than codec.VERSION
UNKNOWN_OP = "unknown_op"         # the service has no such op
BAD_ARGS = "bad_args"             # missing, unknown or mistyped argument, or a value out of range
TOO_LARGE = "too_large"           # over bus.max_message_bytes
NOT_FOUND = "not_found"           # the named thing does not exist
INTERNAL = "internal"             # a bug in the handler (logged with its traceback)
UNAVAILABLE = "unavailable"       # nothing listening
TIMEOUT = "timeout"               # sent, no reply on any attempt
NOT_TRADING = "not_trading"       # bot: its state database is unusable
NO_MODEL = "no_model"             # predictor: no usable model loaded
NO_PREDICTION = "no_prediction"   # predictor: no bar predicted yet

BAD_REQUEST_CODES = frozenset({BAD_MESSAGE, BAD_VERSION, UNKNOWN_OP, BAD_ARGS, TOO_LARGE})
ALL = (BAD_MESSAGE, BAD_VERSION, UNKNOWN_OP, BAD_ARGS, TOO_LARGE, NOT_FOUND, INTERNAL,
       UNAVAILABLE, TIMEOUT, NOT_TRADING, NO_MODEL, NO_PREDICTION)


class MessageError(ValueError):
    """A message that cannot be accepted; ``code`` goes back to the sender."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
