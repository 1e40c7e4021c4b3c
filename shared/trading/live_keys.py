"""API keys for the live broker: read from a JSON file that must be the user's own, mode 0600 or
stricter, never larger than 64 KiB — and kept out of every log line, exception and repr (a
redacting logger for ccxt, whose DEBUG request lines carry the key header)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

KEY_FIELDS = ("apiKey", "secret", "password")
# constructor settings that carry credentials: they come from the keys file only
_CREDENTIAL_OPTIONS = frozenset({*KEY_FIELDS, "uid", "login", "privateKey", "walletAddress",
                                 "token", "twofa"})
_MAX_KEYS_FILE = 64 * 1024


class BrokerError(Exception):
    """Something the broker cannot do."""


class BrokerConfigError(BrokerError):
    """Bad keys file or broker settings; raised before any network use."""


def load_keys(path: Path) -> dict[str, str]:
    """API keys from ``path``; BrokerConfigError (naming the file, never its content) unless it
    is a regular file of the current user, mode 0600 or stricter, holding the JSON object."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang; fstat below checks what was really opened
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise BrokerConfigError(f"keys file {path} does not exist") from None
    except OSError as exc:
        raise BrokerConfigError(f"keys file {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISREG(st.st_mode):
            raise BrokerConfigError(f"keys file {path} is not a regular file "
                                    f"({stat.filemode(st.st_mode)})")
        if mode & 0o077:
            raise BrokerConfigError(f"keys file {path} has mode {mode:04o}: group/other may read "
                                    f"it; it must be 0600 or stricter (chmod 600)")
        if st.st_uid != os.geteuid():
            raise BrokerConfigError(f"keys file {path} (mode {mode:04o}) is owned by uid "
                                    f"{st.st_uid}, not by the current user (uid {os.geteuid()})")
        raw = b""
        while len(raw) <= _MAX_KEYS_FILE and (chunk := os.read(fd, _MAX_KEYS_FILE + 1)):
            raw += chunk
    finally:
        os.close(fd)
    keys, problem = _parse_keys(raw)
    if problem is not None:     # raised here, outside any except: no chained error holds the text
        raise BrokerConfigError(f"keys file {path} {problem}; expected a JSON object "
                                f'{{"apiKey": "...", "secret": "..."}}')
    return keys


def _parse_keys(raw: bytes) -> tuple[dict[str, str], str | None]:
    if len(raw) > _MAX_KEYS_FILE:
        return {}, f"is larger than {_MAX_KEYS_FILE} bytes"
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return {}, f"is not valid JSON (line {exc.lineno}, column {exc.colno})"
    if not isinstance(data, dict):
        return {}, "does not hold a JSON object"
    missing = [k for k in ("apiKey", "secret") if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        return {}, f"lacks non-empty string field(s) {', '.join(missing)}"
    if "password" in data and not isinstance(data["password"], str):
        return {}, "has a non-string 'password'"
    return {k: data[k] for k in KEY_FIELDS if k in data}, None


class _Redactor:
    """Replaces key material in text; also ccxt's logger, whose DEBUG request lines carry the
    API key header."""

    def __init__(self, secrets: list[str], logger: logging.Logger) -> None:
        self._secrets = sorted((s for s in secrets if s), key=len, reverse=True)
        self._logger = logger

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return f"<redacting logger {self._logger.name}>"

    def _log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self._logger.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            kwargs.pop("exc_info", None)        # a traceback could quote request headers
            self._logger.log(level, "%s", self(text), **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(logging.ERROR, msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return self._logger.isEnabledFor(level)
