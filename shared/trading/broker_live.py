"""The live order path: orders to a real exchange through ccxt's synchronous REST client.

Every order carries the caller's deterministic ``client_id`` as the exchange's client order id,
and the exchange is the only source of truth about it:

* before sending, the broker asks the exchange whether it already knows that client id. Binance
  refuses a duplicate client order id only while the first order is *open*; a filled market
  order's id can be reused, so without this check a resend after a crash could fill twice;
* when a send ends without an answer (timeout, reset, 5xx, unparsable reply), the order is never
  sent again: the broker asks the exchange by client id and returns what it finds, or status
  ``"unknown"`` — the caller decides, typically by calling ``order_status`` later;
* ``reconcile`` asks the same question for every order the bot's database left without a
  final state, e.g. after a crash between send and acknowledgement.

Keys come from a JSON file ``{"apiKey": "...", "secret": "..."}`` (optionally ``"password"``
for exchanges that need a passphrase) that must be a regular file owned by the current user
with mode 0600 or stricter. Key material never reaches a log line, an exception or a repr.
Not thread-safe: one broker per thread, as the bot is synchronous.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

import ccxt

from shared.market.bars import Bar
from shared.trading.types import Fill, OrderRequest, OrderResult

log = logging.getLogger("bdt.broker.live")

KEY_FIELDS = ("apiKey", "secret", "password")
# constructor settings that carry credentials: they come from the keys file only
_CREDENTIAL_OPTIONS = frozenset({*KEY_FIELDS, "uid", "login", "privateKey", "walletAddress",
                                 "token", "twofa"})
_MAX_KEYS_FILE = 64 * 1024
_DUPLICATE_MARKERS = ("Duplicate order sent",)     # Binance -2010 for a reused client id


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


class LiveBroker:
    """Places, queries and cancels ``symbol`` orders on ``exchange_id`` by client order id.

    ``exchange_options`` go to the ccxt constructor (e.g. ``urls`` and ``markets`` to point it
    elsewhere) but cannot carry credentials or turn on ccxt's automatic request retries.
    After a send without an answer the order is looked up ``ack_lookups`` times,
    ``ack_lookup_delay_s`` apart, as an exchange may take a moment to show a new order.
    """

    def __init__(self, exchange_id: str, symbol: str, keys_file: Path, *,
                 exchange_options: dict[str, Any] | None = None, timeout_ms: int = 10_000,
                 ack_lookups: int = 3, ack_lookup_delay_s: float = 1.0) -> None:
        self.exchange_id, self.symbol, self.keys_file = exchange_id, symbol, Path(keys_file)
        options = dict(exchange_options or {})
        bad = sorted(_CREDENTIAL_OPTIONS & options.keys())
        if bad:
            raise BrokerConfigError(f"exchange_options must not carry credentials "
                                    f"({', '.join(bad)}); they come from the keys file")
        if exchange_id not in ccxt.exchanges:
            raise BrokerConfigError(f"exchange {exchange_id!r} is unknown to ccxt")
        keys = load_keys(self.keys_file)            # before anything can touch the network
        self._redact = _Redactor(list(keys.values()), logging.getLogger("bdt.broker.ccxt"))
        # no silent resend, ever: ccxt's retry-on-failure would repeat a create_order
        ccxt_options = {**options.get("options", {}), "maxRetriesOnFailure": 0}
        if any(isinstance(v, dict) and v.get("maxRetriesOnFailure") for v in ccxt_options.values()):
            raise BrokerConfigError("exchange_options must not enable ccxt's maxRetriesOnFailure")
        self._exchange = getattr(ccxt, exchange_id)({
            **options, "options": ccxt_options, "enableRateLimit": True,
            "timeout": timeout_ms, "verbose": False, **keys,
        })
        self._exchange.logger = self._redact
        del keys
        self.ack_lookups, self.ack_lookup_delay_s = max(1, ack_lookups), ack_lookup_delay_s

    def __repr__(self) -> str:
        return (f"LiveBroker(exchange_id={self.exchange_id!r}, symbol={self.symbol!r}, "
                f"keys_file={str(self.keys_file)!r})")

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self._exchange.close()

    def __enter__(self) -> LiveBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- orders ---------------------------------------------------------------------------

    remote = True      # orders leave the process: the engine records each before submit()

    def submit(self, order: OrderRequest, ref_price: float | None = None,
               ts: int | None = None) -> OrderResult:
        """Place ``order`` unless the exchange already knows its client id; never resends.
        ``ref_price`` and ``ts`` (the broker interface's) are not used: the exchange prices."""
        if order.symbol != self.symbol:
            raise ValueError(f"order for {order.symbol!r} sent to the {self.symbol!r} broker")
        cid = order.client_id
        existing, why = self._lookup(cid)
        if existing is not None:
            log.warning("submit %s: the exchange already has this client id; not sent again", cid)
            return self._result(cid, existing, duplicate=True,
                                error="client id already known to the exchange; not sent again")
        if why is not None:
            return OrderResult(cid, "unknown", error=f"not sent: could not check the client id "
                                                      f"first ({why})")
        price = order.limit_price if order.type == "limit" else None
        log.info("submit %s: %s %s %g %s%s", cid, order.type, order.side, order.qty,
                 self.symbol, f" @ {price:g}" if price is not None else "")
        try:
            raw = self._exchange.create_order(self.symbol, order.type, order.side, order.qty,
                                              price, params={"clientOrderId": cid})
        except ccxt.ExchangeError as exc:           # an answer: the exchange refused it
            return self._refused(cid, exc)
        except Exception as exc:                    # no (usable) answer: it may be placed
            return self._no_answer(cid, exc)
        return self._result(cid, raw)

    def order_status(self, client_id: str) -> OrderResult:
        """What the exchange knows about ``client_id`` now (``"unknown"`` if nothing)."""
        found, why = self._lookup(client_id)
        if found is not None:
            return self._result(client_id, found)
        return OrderResult(client_id, "unknown",
                            error=why or "the exchange has no order with this client id")

    def cancel(self, client_id: str) -> OrderResult:
        """Cancel ``client_id``; returns the order's state afterwards, which is not
        ``"canceled"`` if it filled first (then ``error`` says why the cancel failed)."""
        log.info("cancel %s", client_id)
        try:
            raw = self._exchange.cancel_order(None, self.symbol,
                                              params={"clientOrderId": client_id})
        except Exception as exc:        # already final, unknown, or no answer: ask the exchange
            state = self.order_status(client_id)
            state.error = f"cancel failed: {self._describe(exc)}" + \
                (f"; {state.error}" if state.error else "")
            return state
        return self._result(client_id, raw)

    def on_bar(self, bar: Bar) -> list[Fill]:
        """The exchange's fills come with order look-ups, not from bars."""
        return []

    def restore(self, open_orders: list[dict[str, Any]],
                ref_price: float | None) -> dict[str, OrderResult]:
        """After a restart: the exchange's state of every order the state left unfinished."""
        return self.reconcile([o["client_id"] for o in open_orders])

    def reconcile(self, client_ids: list[str]) -> dict[str, OrderResult]:
        """On start: the exchange's state of each order the database left unfinished."""
        results = {cid: self.order_status(cid) for cid in client_ids}
        for cid, res in results.items():
            log.info("reconcile %s: %s (%d fill(s))%s", cid, res.status, len(res.fills),
                     f": {res.error}" if res.error else "")
        return results

    # -- internals ------------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        return self._redact(f"{type(exc).__name__}: {exc}")

    def _lookup(self, client_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(order, None) if found; (None, None) if the exchange has no such order;
        (None, why) if it could not be asked."""
        try:
            return self._exchange.fetch_order(None, self.symbol,
                                              params={"clientOrderId": client_id}), None
        except ccxt.OrderNotFound:
            return None, None
        except Exception as exc:
            return None, f"order lookup failed: {self._describe(exc)}"

    def _refused(self, cid: str, exc: Exception) -> OrderResult:
        error = self._describe(exc)
        if any(marker in str(exc) for marker in _DUPLICATE_MARKERS):
            log.warning("submit %s: refused as a duplicate client id; asking the exchange", cid)
            found, why = self._lookup(cid)
            if found is not None:
                return self._result(cid, found, duplicate=True, error=error)
            return OrderResult(cid, "unknown", error=f"{error}; {why or 'order not found'}",
                                duplicate=True)
        # "rejected" must mean "not on the exchange": an error code ccxt does not know could
        # come with a placed order, so one look settles it
        found, why = self._lookup(cid)
        if found is not None:
            log.error("submit %s: refused (%s) yet the exchange has the order", cid, error)
            return self._result(cid, found, error=error)
        if why is not None:
            return OrderResult(cid, "unknown", error=f"{error}; {why}")
        log.warning("submit %s rejected: %s", cid, error)
        return OrderResult(cid, "rejected", error=error)

    def _no_answer(self, cid: str, exc: Exception) -> OrderResult:
        error = f"no acknowledgement ({self._describe(exc)})"
        log.warning("submit %s: %s; asking the exchange by client id, not resending", cid, error)
        why: str | None = None
        for attempt in range(self.ack_lookups):
            if attempt:
                time.sleep(self.ack_lookup_delay_s)
            found, why = self._lookup(cid)
            if found is not None:
                return self._result(cid, found, error=error)
        return OrderResult(cid, "unknown",
                            error=f"{error}; {why or 'the exchange has no order with this id'}")

    def _result(self, cid: str, order: dict[str, Any], *, duplicate: bool = False,
                error: str | None = None) -> OrderResult:
        filled = float(order.get("filled") or 0.0)
        ccxt_status = order.get("status")
        status = {"closed": "filled", "canceled": "canceled", "expired": "canceled",
                  "rejected": "rejected"}.get(ccxt_status or "")
        if ccxt_status == "open":
            status = "partially_filled" if filled > 0 else "open"
        problems = [error] if error else []
        if status is None:
            status = "unknown"
            problems.append(f"unrecognized order status {ccxt_status!r}")
        fills, problem = self._fills(cid, order, filled)
        if problem:
            problems.append(problem)
        oid = order.get("id")
        return OrderResult(cid, status, None if oid is None else str(oid), fills,
                            "; ".join(problems) or None, duplicate)

    def _fills(self, cid: str, order: dict[str, Any],
               filled: float) -> tuple[list[Fill], str | None]:
        """The order's fills: from the order answer when it lists them all (Binance FULL
        response), else from the account's trades for this order id."""
        if filled <= 0:
            return [], None
        trades = order.get("trades") or []
        if not _covers(trades, filled):
            try:
                trades = self._exchange.fetch_order_trades(order["id"], self.symbol)
            except Exception as exc:
                return [], f"fills not fetched: {self._describe(exc)}"
        side = order.get("side") or ""
        ts = order.get("lastTradeTimestamp") or order.get("timestamp") or int(time.time() * 1e3)
        fills = [Fill(cid, self.symbol, side, float(t["amount"]), float(t["price"]),
                      self._fee_in_quote(t, float(t["price"])), int(t.get("timestamp") or ts),
                      t.get("takerOrMaker") or "taker")
                 for t in trades if t.get("amount") and t.get("price")]
        got = sum(f.qty for f in fills)
        if not math.isclose(got, filled, rel_tol=1e-9, abs_tol=1e-12):
            return fills, f"fills cover {got:g} of {filled:g} filled"
        return fills, None

    def _fee_in_quote(self, trade: dict[str, Any], price: float) -> float:
        market = self._exchange.market(self.symbol)
        fees = trade.get("fees") or ([trade["fee"]] if trade.get("fee") else [])
        total = 0.0
        for fee in fees:
            cost = float(fee.get("cost") or 0.0)
            currency = fee.get("currency")
            if cost == 0 or currency == market["quote"]:
                total += cost
            elif currency == market["base"]:
                total += cost * price
            else:       # e.g. BNB: no rate at hand; counted as zero, loudly
                log.warning("fee of %g %s on a %s fill not converted to %s; counted as 0",
                            cost, currency, self.symbol, market["quote"])
        return total


def _covers(trades: list[dict[str, Any]], filled: float) -> bool:
    total = sum(float(t.get("amount") or 0.0) for t in trades if t.get("price"))
    return bool(trades) and math.isclose(total, filled, rel_tol=1e-9, abs_tol=1e-12)
