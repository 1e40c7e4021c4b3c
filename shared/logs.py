"""Logging for every process: one line per event on stderr, with the component name;
supervisord captures and rotates it. ``setup_logging`` is the one place a process configures
logging — every service (``shared.bus.service.run``), the batch jobs, ``bdt cgexec``, the
dashboard's launcher and ``bdt`` itself call it — and ``SafeFormatter`` is the one formatter.

What a log line may hold: text only. Untrusted strings (an op name, a key, a symbol from a
file, an exception's message) reach log lines, and control characters in them would drive the
terminal of whoever reads the log, forge lines, or — being characters XML 1.0 cannot carry —
break ``supervisorctl tail`` (supervisord's XML-RPC: ``ExpatError: not well-formed``). So
``SafeFormatter`` escapes every such character in everything it prints (message, arguments,
exception text): C0 controls (newline and tab included), DEL, C1 controls, surrogates,
U+FFFE/U+FFFF, and the Unicode line separators and bidirectional overrides — as Python writes
them, ``\\n``, ``\\t``, ``\\x1b``, ``\\u2028``. A backslash is left as it is (``\\x1b`` in a log
line is thus either the escape character or those four characters, which is harmless).

One event, one line — except a traceback (or a stack), which stays readable: it follows on
its own lines, each escaped the same way and prefixed with ``"| "``, so no text of any
exception can start a line that looks like an event (every event line starts with its time).

``Throttle``: events a peer can repeat at will (refused requests, malformed messages, a step
failing on every tick) are one line per key and interval, with a count of the rest.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

# C0 (all), DEL, C1, the line/paragraph separators, the bidirectional controls, surrogates
# (a str decoded with surrogateescape), and the two non-characters XML 1.0 excludes.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069"
                    "\ud800-\udfff\ufffe\uffff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
CONTINUATION = "| "          # the prefix of a traceback's lines under the event's line
FORMAT = "%(asctime)s %(levelname)s %(component)s %(name)s: %(message)s"


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every character a log line must not hold written as its escape
    (``\\x1b``, ``\\n``, ``\\u2028``); printable text, non-ASCII letters included, unchanged."""
    return UNSAFE.sub(_escape_one, text)


class EscapingWriter:
    """A text stream that writes what ``escape`` would, except the line breaks and tabs a
    command's output is made of (and ``\r`` where ``keep_cr``: a progress line on a
    terminal's stderr): ``bdt`` prints values that came from outside (a cache value, an alert's
    message, a symbol from a file), and an escape sequence in them must not drive the
    operator's terminal. Everything else is the wrapped stream's."""

    def __init__(self, stream: Any, keep_cr: bool = False) -> None:
        self._stream = stream
        kept = "\n\t\r" if keep_cr else "\n\t"
        self._unsafe = re.compile(f"(?![{kept}]){UNSAFE.pattern}")

    def write(self, text: str) -> int:
        self._stream.write(self._unsafe.sub(_escape_one, text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class SafeFormatter(logging.Formatter):
    """The standard formatter with everything it prints escaped (see the module's doc): the
    event on one line, a traceback or stack below it on lines prefixed with ``"| "``."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if record.name == "py.warnings":       # warnings.formatwarning ends with a newline
            record.message = record.message.rstrip("\n")
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = escape(self.formatMessage(record))
        blocks = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            line += "".join("\n" + CONTINUATION + escape(part) for part in block.split("\n"))
        return line


def setup_logging(component: str, level: str | int = "INFO", *, fmt: str = FORMAT,
                  replace: bool = True) -> logging.Logger:
    """Route every log record of this process (warnings and uncaught exceptions too) through
    one ``SafeFormatter`` on stderr; returns the logger ``bdt.<component>``. ``component``
    may be anything (a job name from argv): it is a value of the format, never part of it.
    ``replace`` False: leave a process whose logging is already configured as it is (``bdt``
    called in-process, by a test that captures logs)."""
    log = logging.getLogger(f"bdt.{component}")
    root = logging.getLogger()
    if root.handlers and not replace:
        return log
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(fmt, defaults={"component": component}))
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)            # warnings.warn writes to stderr raw otherwise
    sys.excepthook = lambda kind, value, tb: _uncaught(log, kind, value, tb)
    threading.excepthook = lambda a: _uncaught(log, a.exc_type, a.exc_value, a.exc_traceback,
                                               a.thread)
    return log


def _uncaught(log: logging.Logger, kind: type[BaseException], value: BaseException | None,
              tb: TracebackType | None, thread: threading.Thread | None = None) -> None:
    """An uncaught exception, logged through the formatter (Python prints it raw)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value or kind(), tb)
    elif not issubclass(kind, SystemExit):          # a thread's sys.exit() is silent
        where = f" in thread {thread.name}" if thread is not None else ""
        log.critical("uncaught exception%s", where, exc_info=(kind, value, tb))


def adopt_streamlit() -> None:
    """Give Streamlit's loggers (each has its own handler and does not propagate) this
    module's formatter, now and for those Streamlit makes later; for the dashboard's app,
    which runs inside Streamlit's process. Idempotent."""
    from streamlit import logger as st_logger

    if getattr(st_logger, "_bdt_adopted", False):
        return
    original = st_logger.setup_formatter

    def setup_formatter(logger: logging.Logger) -> None:
        original(logger)
        _reformat(logger)

    st_logger.setup_formatter = setup_formatter
    st_logger._bdt_adopted = True
    for logger in list(st_logger._loggers.values()):
        _reformat(logger)


def _reformat(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.setFormatter(SafeFormatter(FORMAT, defaults={"component": "dashboard"}))


@dataclass
class _Window:
    start: float
    head: str
    noun: str
    level: int
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    last: str = ""


class Throttle:
    """At most about one line per key and interval, for events a peer can repeat at will
    (refused requests, malformed stream messages, a handler failing on the same input).

    The first event of a quiet key is logged at once, in full. Those that follow within
    ``interval_s`` are only counted, by kind; when the interval is over one line says how many
    there were, of which kinds, and the last one — ``cache: refused 992 more requests from
    pid 4242 in the last 10 s (bad_message 990, unknown_op 2); last: …`` — and a new interval
    starts, so a steady flood gives one line per interval. Past ``max_keys`` keys in flight,
    new keys share one (``OTHERS``), so a flood from many peers stays bounded too. ``flush``
    closes the intervals that are over: ``event`` calls it, and so should the owner's loop (a
    flood that stops is still summed up)."""

    OTHERS = "other peers"

    def __init__(self, log: logging.Logger, interval_s: float = 10.0, *, max_keys: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.interval_s, self.max_keys, self.clock = log, interval_s, max_keys, clock
        self._open: dict[Hashable, _Window] = {}
        self._due = math.inf

    def event(self, key: Hashable, text: str, *, head: str, noun: str, who: str = "",
              detail: str | None = None, kind: str = "", level: int = logging.WARNING,
              exc_info: Any = None) -> None:
        """One event: ``text`` logged now (with ``exc_info``), or counted under ``key`` as
        ``kind``. The summary line reads ``{head} {n} more {noun} from {who} in the last …;
        last: {detail}`` (``detail`` defaults to ``text``)."""
        now = self.clock()
        if now >= self._due:
            self.flush(now)
        if key not in self._open and len(self._open) >= self.max_keys:
            key = self.OTHERS
            who, noun = (self.OTHERS, noun) if who else ("", "events of other kinds")
        window = self._open.get(key)
        if window is None:
            noun = f"{noun} from {who}" if who else noun
            self._open[key] = _Window(now, head, noun, level)
            self._due = min(self._due, now + self.interval_s)
            self.log.log(level, "%s", text, exc_info=exc_info)
            return
        window.counts[kind] += 1
        window.last = text if detail is None else detail

    def flush(self, now: float | None = None) -> None:
        """Sum up every interval that is over (a line only where events were held back)."""
        now = self.clock() if now is None else now
        if now < self._due:
            return
        for key, window in list(self._open.items()):
            if now - window.start < self.interval_s:
                continue
            del self._open[key]
            if window.counts:
                kinds = ", ".join(f"{k} {n}" for k, n in window.counts.most_common() if k)
                self.log.log(window.level, "%s %d more %s in the last %.0f s%s; last: %s",
                             window.head, sum(window.counts.values()), window.noun,
                             now - window.start, f" ({kinds})" if kinds else "", window.last)
                self._open[key] = _Window(now, window.head, window.noun, window.level)
        self._due = min((w.start for w in self._open.values()), default=math.inf) + \
            self.interval_s
