"""LiveBroker against a local fake of Binance spot REST (tests/fake_exchange_rest.py), offline."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.trading.broker_live import BrokerConfigError, LiveBroker
from shared.trading.types import OrderRequest, OrderResult
from tests.fake_exchange_rest import FakeBinanceRest
from tests.helpers import threads_all_ended

SYMBOL = "BTC/USDT"
API_KEY = "AKtestkey-0123456789abcdef"
SECRET = "SKtopsecret-fedcba9876543210"
PRICE = 50_000.0
FEE_RATE = 0.001

MakeBroker = Callable[..., LiveBroker]


def write_keys(path: Path, content: str, mode: int = 0o600) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    return path


no_thread_left = pytest.fixture(autouse=True)(threads_all_ended)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return write_keys(tmp_path / "keys.json", json.dumps({"apiKey": API_KEY, "secret": SECRET}))


@pytest.fixture
def fake() -> Iterator[FakeBinanceRest]:
    with FakeBinanceRest(api_key=API_KEY, secret=SECRET, price=PRICE, fee_rate=FEE_RATE) as f:
        yield f


@pytest.fixture
def make_broker(fake: FakeBinanceRest, keys_file: Path) -> Iterator[MakeBroker]:
    brokers: list[LiveBroker] = []

    def make(*, timeout_ms: int = 2_000, options: dict[str, Any] | None = None) -> LiveBroker:
        base = fake.ccxt_options()
        extra = dict(options or {})
        ccxt_options = {**base["options"], **extra.pop("options", {})}
        broker = LiveBroker("binance", SYMBOL, keys_file, timeout_ms=timeout_ms,
                            exchange_options={**base, "rateLimit": 1, **extra,
                                              "options": ccxt_options},
                            ack_lookups=2, ack_lookup_delay_s=0.05)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


def market(cid: str, qty: float = 0.01, side: str = "buy") -> OrderRequest:
    return OrderRequest(cid, SYMBOL, side, qty)


def limit(cid: str, price: float, qty: float = 0.02, side: str = "buy") -> OrderRequest:
    return OrderRequest(cid, SYMBOL, side, qty, type="limit", limit_price=price)


def assert_one_fill(res: OrderResult, qty: float, price: float, liquidity: str) -> None:
    """One fill of ``qty`` at ``price``; the venue takes the fee in the asset received, so a
    buy holds ``qty`` less the fee (the fill's qty) and the fee's value is in quote."""
    assert len(res.fills) == 1, res
    fill = res.fills[0]
    held = qty * (1 - FEE_RATE) if fill.side == "buy" else qty
    assert (fill.client_id, fill.symbol, fill.qty, fill.price, fill.liquidity) == \
        (res.client_id, SYMBOL, pytest.approx(held), pytest.approx(price), liquidity)
    assert fill.fee == pytest.approx(qty * price * FEE_RATE)
    assert fill.ts > 0


# -- the happy paths --------------------------------------------------------------------------

def test_market_order_fills(fake: FakeBinanceRest, make_broker: MakeBroker) -> None:
    res = make_broker().submit(market("m-1", 0.01, "sell"))
    assert (res.status, res.error, res.duplicate) == ("filled", None, False)
    assert res.exchange_id is not None
    assert_one_fill(res, 0.01, PRICE, "taker")
    assert res.fills[0].side == "sell"
    assert fake.created["m-1"] == 1
    assert fake.unexpected == []            # pre-set markets: no exchangeInfo, nothing else


def test_limit_order_rests_then_fills(fake: FakeBinanceRest, make_broker: MakeBroker) -> None:
    broker = make_broker()
    res = broker.submit(limit("l-1", 49_000.0, qty=0.02))
    assert (res.status, res.fills, res.error) == ("open", [], None)

    fake.fill_limit("l-1", qty=0.005)
    part = broker.order_status("l-1")
    assert part.status == "partially_filled" and part.exchange_id == res.exchange_id
    assert_one_fill(part, 0.005, 49_000.0, "maker")

    fake.set_price(48_900.0)                # crosses the rest of the order
    done = broker.order_status("l-1")
    assert (done.status, done.error) == ("filled", None)
    assert [f.qty for f in done.fills] == [pytest.approx(0.005 * (1 - FEE_RATE)),
                                           pytest.approx(0.015 * (1 - FEE_RATE))]
    assert done.filled_qty == pytest.approx(0.02 * (1 - FEE_RATE))
    assert all(f.price == 49_000.0 and f.liquidity == "maker" for f in done.fills)


def test_cancel_open_limit(fake: FakeBinanceRest, make_broker: MakeBroker) -> None:
    broker = make_broker()
    assert broker.submit(limit("c-1", 40_000.0)).status == "open"
    res = broker.cancel("c-1")
    assert (res.status, res.fills, res.error) == ("canceled", [], None)
    assert broker.order_status("c-1").status == "canceled"
    again = broker.cancel("c-1")            # already final: the exchange's state, and why
    assert again.status == "canceled" and "cancel failed" in (again.error or "")


def test_cancel_after_fill_reports_the_fill(fake: FakeBinanceRest,
                                            make_broker: MakeBroker) -> None:
    broker = make_broker()
    broker.submit(limit("c-2", 49_000.0, qty=0.01))
    fake.fill_limit("c-2")
    res = broker.cancel("c-2")
    assert res.status == "filled" and "Unknown order sent" in (res.error or "")
    assert_one_fill(res, 0.01, 49_000.0, "maker")
    missing = broker.cancel("never-sent")
    assert missing.status == "unknown" and missing.exchange_id is None


def test_rejected_insufficient_balance(fake: FakeBinanceRest, make_broker: MakeBroker) -> None:
    fake.reject_next_order()
    res = make_broker().submit(market("r-1", 5.0))
    assert res.status == "rejected" and res.fills == [] and res.exchange_id is None
    assert "InsufficientFunds" in (res.error or "")
    assert "insufficient balance" in (res.error or "")
    assert fake.created["r-1"] == 0 and fake.trades == []


def test_fees_are_valued_in_quote_and_a_base_fee_changes_the_quantity(
        make_broker: MakeBroker) -> None:
    """Binance charges a buy's fee in the base asset: the fill's qty is what the account
    holds, and Fill.fee is always quote currency."""
    broker = make_broker()
    broker.rules()                          # the market, as the exchange lists it

    def fill(side: str, fees: dict[str, Any]) -> tuple[float, float]:
        f = broker._fill("f-1", side, {"amount": 0.1, "price": PRICE, **fees}, 1)
        return f.qty, f.fee

    assert fill("buy", {"fee": {"cost": 0.0001, "currency": "BTC"}}) == \
        (pytest.approx(0.0999), pytest.approx(5.0))
    assert fill("sell", {"fee": {"cost": 0.0001, "currency": "BTC"}}) == \
        (pytest.approx(0.1001), pytest.approx(5.0))
    assert fill("sell", {"fees": [{"cost": 0.5, "currency": "USDT"},
                                  {"cost": 0.0, "currency": "BNB"}]}) == (0.1, 0.5)
    assert fill("buy", {"fee": None}) == (0.1, 0.0)


# -- no acknowledgement, crash, resend --------------------------------------------------------

def test_timeout_is_resolved_by_client_id_without_resend(fake: FakeBinanceRest,
                                                         make_broker: MakeBroker) -> None:
    # ccxt's own retry setting is overridden: a resend must never happen behind our back
    broker = make_broker(timeout_ms=300, options={"options": {"maxRetriesOnFailure": 3}})
    fake.delay_next_order(3.0)              # placed and filled, answer held past the timeout
    res = broker.submit(market("t-1", 0.01))
    assert res.status == "filled", res
    assert "no acknowledgement" in (res.error or "") and "RequestTimeout" in (res.error or "")
    assert_one_fill(res, 0.01, PRICE, "taker")
    assert fake.create_requests["t-1"] == 1 and fake.created["t-1"] == 1


def test_lost_order_is_unknown_not_resent(fake: FakeBinanceRest,
                                          make_broker: MakeBroker) -> None:
    broker = make_broker(timeout_ms=300)
    fake.delay_next_order(3.0, record=False)    # the request never reached the matching engine
    res = broker.submit(market("t-2"))
    assert res.status == "unknown" and res.fills == []
    assert "no acknowledgement" in (res.error or "")
    assert fake.create_requests["t-2"] == 1 and fake.created["t-2"] == 0


@pytest.mark.parametrize("scope", ["any", "open"])
def test_restart_between_send_and_ack(fake: FakeBinanceRest, make_broker: MakeBroker,
                                      scope: str) -> None:
    """scope "open" is Binance's documented rule: a *filled* order's client id may be reused,
    so only the broker's look-before-send keeps the resend from filling twice."""
    fake.duplicate_scope = scope
    crashed = make_broker(timeout_ms=300)
    fake.delay_next_order(3.0)
    crashed.submit(market("x-1", 0.03))     # the bot "dies" before it can record the answer
    crashed.close()

    restarted = make_broker()
    found = {cid: restarted.order_status(cid) for cid in ("x-1", "x-never")}
    assert found["x-1"].status == "filled"
    assert_one_fill(found["x-1"], 0.03, PRICE, "taker")
    assert found["x-never"].status == "unknown" and found["x-never"].fills == []

    again = restarted.submit(market("x-1", 0.03))
    assert again.duplicate and again.status == "filled"
    assert again.fills == found["x-1"].fills    # the one existing fill, not a second one
    assert fake.created["x-1"] == 1 and fake.create_requests["x-1"] == 1
    assert len(fake.fills_for("x-1")) == 1


def test_duplicate_refused_by_the_exchange(fake: FakeBinanceRest,
                                           make_broker: MakeBroker) -> None:
    """The look-before-send misses the order (query-side lag): the exchange's duplicate check
    is the second line, and the broker reports the existing order."""
    make_broker().submit(market("d-1", 0.02))
    fake.hide_next_lookups(1)
    res = make_broker().submit(market("d-1", 0.02))
    assert res.duplicate and res.status == "filled"
    assert "Duplicate order sent" in (res.error or "")
    assert_one_fill(res, 0.02, PRICE, "taker")
    assert fake.create_requests["d-1"] == 2 and fake.created["d-1"] == 1
    assert len(fake.fills_for("d-1")) == 1


# -- keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_keys_file_readable_by_others_is_refused(fake: FakeBinanceRest, keys_file: Path,
                                                 mode: int) -> None:
    os.chmod(keys_file, mode)
    with pytest.raises(BrokerConfigError) as info:
        LiveBroker("binance", SYMBOL, keys_file, exchange_options=fake.ccxt_options())
    assert str(keys_file) in str(info.value) and f"{mode:04o}" in str(info.value)
    assert fake.requests == []


def test_keys_file_errors_are_clear(fake: FakeBinanceRest, tmp_path: Path) -> None:
    def error(path: Path) -> str:
        with pytest.raises(BrokerConfigError) as info:
            LiveBroker("binance", SYMBOL, path, exchange_options=fake.ccxt_options())
        if path.is_file():      # no chained JSON/Unicode error holding the file's text
            assert info.value.__cause__ is None and info.value.__context__ is None
        return str(info.value)

    assert "does not exist" in error(tmp_path / "absent.json")
    bad = write_keys(tmp_path / "bad.json", f'{{"apiKey": "{API_KEY}", "secret": "{SECRET}"')
    msg = error(bad)
    assert "not valid JSON" in msg and SECRET not in msg and API_KEY not in msg
    assert "secret" in error(write_keys(tmp_path / "half.json", '{"apiKey": "k"}'))
    assert "JSON object" in error(write_keys(tmp_path / "list.json", "[1, 2]"))
    assert "not a regular file" in error(tmp_path)
    if os.geteuid() == 0:                   # root can hand the file to someone else
        foreign = write_keys(tmp_path / "foreign.json", json.dumps({"apiKey": "a", "secret": "b"}))
        os.chown(foreign, 12345, 12345)
        assert "owned by uid 12345" in error(foreign)
    good = write_keys(tmp_path / "good.json", json.dumps({"apiKey": "a", "secret": "b"}))
    with pytest.raises(BrokerConfigError, match="credentials"):
        LiveBroker("binance", SYMBOL, good,
                   exchange_options={**fake.ccxt_options(), "secret": SECRET})
    with pytest.raises(BrokerConfigError, match="maxRetriesOnFailure"):
        LiveBroker("binance", SYMBOL, good, exchange_options={
            **fake.ccxt_options(), "options": {"order": {"maxRetriesOnFailure": 2}}})
    assert fake.requests == []


def test_keys_never_reach_logs_errors_or_repr(fake: FakeBinanceRest, make_broker: MakeBroker,
                                              keys_file: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)         # ccxt logs every request's headers at DEBUG
    broker = make_broker(timeout_ms=300)
    texts = [repr(broker), str(broker)]
    fake.delay_next_order(3.0)
    results = [broker.submit(market("s-1"))]
    fake.reject_next_order()
    results += [broker.submit(market("s-2")), broker.cancel("s-none"),
                broker.submit(limit("s-3", 1.0))]
    wrong = FakeBinanceRest(api_key=API_KEY, secret="another-secret").start()
    try:                                    # signature refused by the exchange
        other = LiveBroker("binance", SYMBOL, keys_file,
                           exchange_options={**wrong.ccxt_options(), "rateLimit": 1})
        results.append(other.submit(market("s-4")))
        other.close()
    finally:
        wrong.stop()
    assert results[-1].status == "unknown" and "AuthenticationError" in (results[-1].error or "")
    with pytest.raises(BrokerConfigError) as info:
        LiveBroker("binance", SYMBOL, write_keys(tmp_path / "k.json", f'["{SECRET}"'))
    texts += [str(info.value), *(r.error or "" for r in results), *map(repr, results)]
    texts.append(caplog.text)
    assert "X-MBX-APIKEY': '***'" in caplog.text    # the request lines were there, redacted
    for text in texts:
        assert SECRET not in text and API_KEY not in text


# -- the venue's rules (issue 18) -------------------------------------------------------------

def test_client_ids_follow_the_exchange_rule(fake: FakeBinanceRest,
                                             make_broker: MakeBroker) -> None:
    """Binance allows ``^[a-zA-Z0-9-_]{1,36}$``: a bar's id is kept readable, a longer one
    (the operator's flatten) becomes a digest, the same every time; an id that breaks the
    rule is refused before it is sent."""
    from shared.trading.types import CLIENT_ID_RULE, client_order_id

    bar_id = client_order_id("BTCUSDT", 1_700_000_000_000)
    assert bar_id == "bdt-BTCUSDT-1700000000000"
    flatten = client_order_id("BTCUSDT", 1_700_000_000_000, "-f1764000000123456789")
    assert CLIENT_ID_RULE.fullmatch(flatten) and len(flatten) <= 36
    assert flatten == client_order_id("BTCUSDT", 1_700_000_000_000, "-f1764000000123456789")
    assert CLIENT_ID_RULE.fullmatch(client_order_id("1000SHIB_USDT", 1, "-f" + "9" * 30))
    res = make_broker().submit(market("bdt-BTCUSDT-1700000000000-f1764000000123456789"))
    assert res.status == "rejected" and "not sent" in (res.error or "")
    assert fake.create_requests == {}


def test_market_rules_are_read_from_the_exchange(make_broker: MakeBroker) -> None:
    rules = make_broker().rules()
    assert (rules.step, rules.min_qty, rules.max_qty, rules.market_max_qty, rules.tick,
            rules.min_notional) == (0.00001, 0.00001, 9000.0, 100.0, 0.01, 5.0)


def test_fit_corrects_what_the_market_would_refuse_or_alter(fake: FakeBinanceRest,
                                                            make_broker: MakeBroker) -> None:
    broker = make_broker()
    fitted, note = broker.fit(limit("fit-1", 49_999.999, qty=0.0123456), PRICE)
    assert fitted is not None and (fitted.qty, fitted.limit_price) == (0.01234, 49_999.99)
    assert "lot step" in note and "tick" in note
    fitted, _ = broker.fit(limit("fit-2", 50_000.001, qty=0.01, side="sell"), PRICE)
    assert fitted is not None and fitted.limit_price == 50_000.01     # a sell's goes up
    fake.set_balance("BTC", 200.0)
    fitted, note = broker.fit(market("fit-3", 150.0, side="sell"), PRICE)
    assert fitted is not None and fitted.qty == 100.0 and "maximum 100" in note
    fake.set_balance("BTC", 0.0333333)
    fitted, note = broker.fit(market("fit-4", 0.05, side="sell"), PRICE)
    assert fitted is not None and fitted.qty == 0.03333 and "free BTC" in note
    fake.set_balance("USDT", 1_000.0)
    fitted, note = broker.fit(market("fit-5", 0.05), PRICE)   # 2,500 USDT wanted, 1,000 free
    assert fitted is not None and fitted.qty == 0.0199 and "free USDT" in note
    refused, why = broker.fit(market("fit-6", 0.00005), PRICE)
    assert refused is None and "notional 2.50 is below the market's minimum 5" in why
    assert fitted is not None and broker.submit(fitted, PRICE).status == "filled"
    assert fake.unexpected == []


def test_a_request_refused_for_its_timestamp_is_retried_after_a_clock_sync(
        fake: FakeBinanceRest, make_broker: MakeBroker) -> None:
    """-1021: the exchange refused the request before executing it. The broker measures the
    clock offset and sends it once more — the order is placed once, not left "unknown"."""
    broker = make_broker()
    fake.clock_offset_ms = -5_000                   # our clock runs 5 s ahead
    res = broker.submit(market("skew-1", 0.01))
    assert res.status == "filled", res
    assert fake.clock_refusals == 1 and fake.created["skew-1"] == 1
    assert ("GET", "/api/v3/time") in fake.requests


def test_an_order_the_exchange_never_saw_is_rejected_once_it_no_longer_can_be(
        fake: FakeBinanceRest, make_broker: MakeBroker) -> None:
    broker = make_broker()
    row = {"client_id": "lost-1", "created_at": time.time()}
    assert broker.poll([row])["lost-1"].status == "unknown"          # may still arrive
    assert broker.poll([{**row, "created_at": time.time() - 91}])["lost-1"].status == \
        "rejected"
    fake.hide_next_lookups(1)                       # a placed order hidden by query lag …
    broker.submit(market("late-1"))
    res = broker.poll([{"client_id": "late-1", "created_at": time.time() - 91}])["late-1"]
    assert res.status == "filled"                   # … is found, whatever its age


def test_a_market_orders_maximum_is_its_own_where_the_market_has_one():
    from shared.trading.types import MarketRules

    both = MarketRules(max_qty=9000.0, market_max_qty=100.0)
    assert (both.max_qty_for("market"), both.max_qty_for("limit")) == (100.0, 9000.0)
    assert MarketRules(max_qty=9000.0).max_qty_for("market") == 9000.0   # none of its own
    assert MarketRules().max_qty_for("limit") == 0.0                     # no maximum
