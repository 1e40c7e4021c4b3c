"""Issue 18: the real TradingEngine, TradingDB and LiveBroker against a local Binance that
behaves like the venue (tests/fake_exchange_rest.py: balances, the fee taken in the asset
received, trade look-ups that lag or fail, the client order id rule, market limits, -1021).

Each case of the issue is driven end to end, bar by bar, and most of them once more with a
restart in the middle: the process "dies" (kill -9: what it committed stays, its memory goes)
and a new engine opens the same state file, as the bot does under supervisord. After every
step the book — the engine's position and cash, and what the state file says — must equal
what the exchange account holds.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import services.bot.service as bot_service
from shared.config import load_config
from shared.market.bars import Bar
from shared.storage.trading_state import TradingDB
from shared.trading.broker_live import LiveBroker
from shared.trading.engine import Decision, TradingEngine
from shared.trading.types import OrderRequest, Prediction
from tests.fake_exchange_rest import FakeBinanceRest
from tests.helpers import threads_all_ended

SYMBOL = "BTC/USDT"
M = 60_000
T0 = 28_333_334 * M            # 2023-11-14, on a minute
API_KEY = "AKvenue-0123456789"
SECRET = "SKvenue-9876543210"
PRICE = 50_000.0
FEE = 0.001
STOP_PRICE = 49_500.0          # a 1 % fall: past the stop (6 × vol 0.001)


class Killed(BaseException):
    """kill -9 in the middle of a call: nothing after it runs, nothing more is committed."""


# -- the harness --------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach a real exchange: names other than the loopback do not resolve."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1"):
            raise OSError(f"test network: {host!r} is not the loopback")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


no_thread_left = pytest.fixture(autouse=True)(threads_all_ended)


class Venue:
    """The fake exchange, a config pointing the bot at it, and engines on one state file."""

    def __init__(self, fake: FakeBinanceRest, tmp_path: Path, var_dir: Path,
                 env: dict[str, str], ccxt_options: dict[str, Any]) -> None:
        self.fake, self.db_path = fake, var_dir / "data" / "trading.db"     # the bot's
        keys = tmp_path / "keys.json"
        keys.write_text(json.dumps({"apiKey": API_KEY, "secret": SECRET}))
        keys.chmod(0o600)
        self.keys = keys
        base = fake.ccxt_options()
        self.options = {**base, "rateLimit": 1,
                        "options": {**base["options"], **ccxt_options}}
        self.cfg = load_config({
            "BDT_VAR": str(var_dir), "BDT_BOT__MODE": "live", "BDT_BOT__KEYS_FILE": str(keys),
            "BDT_MARKET__EXCHANGE_OPTIONS": json.dumps(self.options),
            "BDT_BOT__ACK_LOOKUPS": "2", "BDT_BOT__ACK_LOOKUP_DELAY_S": "0.05",
            "BDT_STRATEGY__MAX_HOLD_BARS": "30", **env})
        self.engines: list[TradingEngine] = []

    def broker(self, timeout_ms: int = 2_000) -> LiveBroker:
        return LiveBroker("binance", SYMBOL, self.keys, exchange_options=self.options,
                          timeout_ms=timeout_ms, ack_lookups=2, ack_lookup_delay_s=0.05)

    def engine(self, broker: LiveBroker | None = None,
               via_config: bool = False) -> TradingEngine:
        """A new engine on the state file, the bot's way (after a start or a kill -9); with
        ``via_config`` its broker is the bot's own (``live_broker(cfg)``)."""
        if via_config:
            broker = bot_service.live_broker(self.cfg, SYMBOL)
        engine = TradingEngine(self.cfg, TradingDB(self.db_path), SYMBOL, M,
                               broker or self.broker())
        self.engines.append(engine)
        return engine

    def kill(self, engine: TradingEngine) -> None:
        """The process is gone: only what it committed remains."""
        self.engines.remove(engine)
        engine.broker.close()
        engine.state.close()

    def restart(self, engine: TradingEngine, via_config: bool = False) -> TradingEngine:
        self.kill(engine)
        return self.engine(via_config=via_config)

    def bar(self, engine: TradingEngine, i: int, close: float, er: float = 0.01,
            p_up: float = 0.8) -> Decision | None:
        """Bar ``i`` closes at ``close`` (the exchange trades there) with a prediction."""
        self.fake.set_price(close)
        bar = Bar(SYMBOL, T0 + i * M, close, close, close, close, 1.0)
        prediction = Prediction(SYMBOL, bar.ts, er, p_up, 0.001, "v1")
        planned = engine.decide(bar, prediction, 0.01, None)     # as the bot does
        return None if planned is None else engine.execute(bar, *planned, prediction)

    def close(self) -> None:
        for engine in list(self.engines):
            self.kill(engine)

    # -- what the book must equal ------------------------------------------------------------
    def assert_book_is_the_account(self, engine: TradingEngine) -> None:
        """The engine's and the state file's position and cash are the exchange account's."""
        btc, usdt = self.fake.balance("BTC"), self.fake.balance("USDT")
        db = engine.state
        assert engine.position.qty == pytest.approx(btc, abs=1e-9), "engine position"
        assert db.position(SYMBOL).qty == pytest.approx(btc, abs=1e-9), "state position"
        assert engine.cash == pytest.approx(usdt, abs=1e-6), "engine cash"
        assert db.get("cash") == pytest.approx(usdt, abs=1e-6), "state cash"

    def orders(self, engine: TradingEngine) -> list[dict[str, Any]]:
        cur = engine.state.db.execute(
            "SELECT client_id, side, qty, status, error, (SELECT count(*) FROM fills f "
            "WHERE f.client_id = o.client_id) AS fills FROM orders o ORDER BY created_at")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


MakeVenue = Callable[..., Venue]


@pytest.fixture
def venue(tmp_path: Path, var_dir: Path) -> Iterator[MakeVenue]:
    """``venue(usdt=…, btc=…, env={...}, options={...}, **fake settings)``: the exchange with
    that account, started; everything is stopped and closed afterwards."""
    made: list[Venue] = []
    fakes: list[FakeBinanceRest] = []

    def make(*, usdt: float = 10_000.0, btc: float = 0.0, bnb: float = 0.0,
             env: dict[str, str] | None = None, options: dict[str, Any] | None = None,
             **fake_settings: Any) -> Venue:
        fake = FakeBinanceRest(api_key=API_KEY, secret=SECRET, price=PRICE, fee_rate=FEE,
                               balances={"USDT": usdt, "BTC": btc, "BNB": bnb},
                               **fake_settings).start()
        fakes.append(fake)
        v = Venue(fake, tmp_path, var_dir, env or {}, options or {})
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()
    for fake in fakes:
        fake.stop()


# -- case 1: the fee is taken in the bought asset -----------------------------------------------

@pytest.mark.parametrize("restart", [False, True])
def test_fee_in_the_bought_asset_books_what_the_account_holds_and_the_stop_sells_it(
        venue: MakeVenue, restart: bool) -> None:
    v = venue()
    engine = v.engine()
    entry = v.bar(engine, 1, PRICE)
    assert entry is not None and entry.action == "buy" and entry.qty == pytest.approx(0.1)
    assert v.fake.balance("BTC") == pytest.approx(0.0999)     # 0.1 less the 0.1 % fee
    v.assert_book_is_the_account(engine)
    assert engine.position.avg_price == pytest.approx(PRICE)
    assert engine.position.realized_pnl == pytest.approx(-5.0)  # the fee, valued in USDT
    if restart:
        engine = v.restart(engine)
        v.assert_book_is_the_account(engine)
    stop = v.bar(engine, 2, STOP_PRICE)
    assert stop is not None and stop.action == "sell" and "stop" in stop.reason
    assert v.fake.balance("BTC") == 0.0                       # the stop executed
    v.assert_book_is_the_account(engine)
    assert engine.position.is_flat
    assert [o["status"] for o in v.orders(engine)] == ["filled", "filled"]


def test_an_exit_never_asks_for_more_than_the_free_balance(venue: MakeVenue) -> None:
    """The account holds less than the book (someone moved coins out): the stop sells what
    is there, floored to the lot size, instead of being refused on every bar; the book and
    the exchange then disagree, which blocks opening and raises an alert."""
    v = venue()
    engine = v.engine()
    v.bar(engine, 1, PRICE)
    v.fake.set_balance("BTC", 0.0612345)        # 0.0999 held, 0.0612345 left: not a lot
    stop = v.bar(engine, 2, STOP_PRICE)
    assert stop is not None and stop.action == "sell"
    assert stop.qty == pytest.approx(0.06123)    # the free balance, floored to the lot step
    assert "free BTC" in stop.reason
    assert v.fake.balance("BTC") == pytest.approx(0.0000045)
    engine.sync_account()
    assert engine.blocked and "disagree" in engine.blocked
    assert [a["alert"] for a in engine.alerts] == ["book_mismatch"]


@pytest.mark.parametrize("restart", [False, True])
def test_a_remainder_below_the_lot_size_does_not_block_the_next_entry(
        venue: MakeVenue, restart: bool) -> None:
    """0.12345 BTC bought holds 0.12332655: the exit sells 0.12332 and 0.00000655 stays —
    dust the exchange would not trade. The book keeps it (it is the account's), decisions see
    a flat position: the next entry goes through."""
    v = venue(usdt=12_345.0)
    engine = v.engine()
    entry = v.bar(engine, 1, PRICE)
    assert entry is not None and entry.qty == pytest.approx(0.12345)
    stop = v.bar(engine, 2, STOP_PRICE)
    assert stop is not None and stop.action == "sell" and stop.qty == pytest.approx(0.12332)
    assert 0 < v.fake.balance("BTC") < 1e-5
    v.assert_book_is_the_account(engine)
    assert engine.risk.state.consecutive_losses == 1         # the round trip closed
    if restart:
        engine = v.restart(engine)
    again = v.bar(engine, 3, PRICE)
    assert again is not None and again.action == "buy"
    v.assert_book_is_the_account(engine)
    first, *_, last = engine.state.fills()
    assert engine.position.opened_ts == last["ts"] != first["ts"]   # a new trade: not the dust's


# -- case 2: live cash comes from the exchange --------------------------------------------------

@pytest.mark.parametrize("restart", [False, True])
def test_live_cash_comes_from_the_exchange_and_sizes_the_order(venue: MakeVenue,
                                                               restart: bool) -> None:
    """3,000 USDT on the exchange, 10,000 in paper.starting_cash: the engine starts from the
    exchange, sizes from that equity, and its buy is one the account can pay."""
    v = venue(usdt=3_000.0)
    engine = v.engine()
    assert engine.cash == 3_000.0
    if restart:
        engine = v.restart(engine)
        assert engine.cash == 3_000.0
    entry = v.bar(engine, 1, PRICE)
    assert entry is not None and entry.action == "buy"
    assert entry.qty == pytest.approx(0.03)                   # 3,000 × 0.5 / 50,000
    assert [o["status"] for o in v.orders(engine)] == ["filled"]
    v.assert_book_is_the_account(engine)


@pytest.mark.parametrize("restart", [False, True])
def test_a_position_held_on_the_exchange_is_the_books_and_gets_its_stop(
        venue: MakeVenue, restart: bool) -> None:
    v = venue(usdt=3_000.0, btc=0.02)
    engine = v.engine()
    assert (engine.cash, engine.position.qty) == (3_000.0, 0.02)
    assert engine.position.avg_price == PRICE                 # priced at the market
    if restart:
        engine = v.restart(engine)
    stop = v.bar(engine, 1, STOP_PRICE)
    assert stop is not None and stop.action == "sell" and "stop" in stop.reason
    assert v.fake.balance("BTC") == 0.0
    v.assert_book_is_the_account(engine)


def test_an_account_that_cannot_be_read_at_start_blocks_opening_until_it_can(
        venue: MakeVenue) -> None:
    """The cash in the config is not money: until the exchange's balances are read, nothing
    is opened."""
    v = venue(usdt=3_000.0)
    v.fake.api_key = "another-key"               # the exchange refuses the account look-up
    engine = v.engine()
    assert engine.blocked and "balances are unknown" in engine.blocked
    assert [a["alert"] for a in engine.alerts] == ["exchange_unreachable"]
    held = v.bar(engine, 1, PRICE)
    assert held is not None and held.action == "hold" and "opening refused" in held.reason
    assert v.fake.create_requests == {}
    v.fake.api_key = API_KEY
    engine.tick(now=time.monotonic() + 3600)
    assert engine.blocked is None and engine.cash == 3_000.0
    entry = v.bar(engine, 2, PRICE)
    assert entry is not None and entry.action == "buy" and entry.qty == pytest.approx(0.03)
    v.assert_book_is_the_account(engine)


@pytest.mark.parametrize("restart", [False, True])
def test_book_and_exchange_disagreeing_refuses_opening_with_an_alert(
        venue: MakeVenue, restart: bool) -> None:
    v = venue()
    engine = v.engine()
    v.bar(engine, 1, PRICE)
    v.bar(engine, 2, STOP_PRICE)                              # a round trip: flat again
    v.assert_book_is_the_account(engine)
    engine.sync_account()
    assert engine.blocked is None and engine.alerts == []
    v.fake.set_balance("USDT", 2_000.0)                       # 7,990 USDT left the account
    engine.tick(now=time.monotonic() + 3600)                  # the periodic refresh
    assert engine.blocked and "cash" in engine.blocked
    assert [a["alert"] for a in engine.alerts] == ["book_mismatch"]
    assert engine.alerts[0]["figures"]["exchange_cash"] == pytest.approx(2_000.0)
    if restart:
        engine = v.restart(engine)                            # compared again at start
        assert engine.blocked and "cash" in engine.blocked
    held = v.bar(engine, 3, PRICE)
    assert held is not None and held.action == "hold" and "opening refused" in held.reason
    assert "disagree" in held.reason
    assert engine.adopt_exchange("operator resume") is None  # the operator accepts it
    assert engine.blocked is None and engine.cash == pytest.approx(2_000.0)
    entry = v.bar(engine, 4, PRICE)
    assert entry is not None and entry.action == "buy"
    v.assert_book_is_the_account(engine)


class Publisher:
    """The bot's stream publisher, in memory."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, stream: str, fields: dict[str, Any]) -> None:
        self.published.append((stream, fields))

    def subscribers(self, stream: str) -> int:
        return 0


def bot(v: Venue, monkeypatch: pytest.MonkeyPatch) -> bot_service.BotService:
    """The bot service in-process, live on the venue, on the same state file."""
    svc = bot_service.BotService(v.cfg)
    svc.publisher = Publisher()  # type: ignore[assignment]
    return svc


def test_the_bot_reports_and_publishes_what_blocks_trading(venue: MakeVenue,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The service: `bdt bot status` says why opening is refused, the alert goes out on the
    events stream, and `bdt bot resume` takes the exchange's figures."""
    v = venue()
    svc = bot(v, monkeypatch)
    published = svc.publisher.published  # type: ignore[union-attr]
    try:
        assert svc.engine is not None and svc.engine.cash == 10_000.0
        status = svc.service_status()
        assert status["trading_blocked"] is None and status["pnl_note"] is None
        assert status["exchange_balance"]["quote_total"] == 10_000.0
        v.fake.set_balance("USDT", 500.0)
        svc.engine._next_sync = 0.0
        svc.tick()
        status = svc.service_status()
        assert "disagree" in status["trading_blocked"]
        assert [(s, f["kind"], f["alert"], f["subject"]) for s, f in published] == \
            [("events", "alert", "book_mismatch", "bot")]
        after = svc.op_resume({})
        assert after["trading_blocked"] is None and after["cash"] == 500.0
    finally:
        svc.close()


# -- case 3: nothing is final until its fills add up --------------------------------------------

@pytest.mark.parametrize("lookup", ["lag", "http500"])
@pytest.mark.parametrize("restart", [False, True])
def test_an_order_stays_open_until_its_fills_add_up(venue: MakeVenue, lookup: str,
                                                     restart: bool) -> None:
    """The order answer lists no fills (newOrderRespType RESULT) and the trade look-up lags
    one call or answers HTTP 500: the order is 'fills_pending', nothing is booked yet, and the
    next look-up — on the next bar, or after a restart — books it; nothing is bought twice."""
    v = venue(options={"newOrderRespType": {"market": "RESULT", "limit": "RESULT"}})
    engine = v.engine()
    (v.fake.lag_trades if lookup == "lag" else v.fake.fail_trades)(1)
    entry = v.bar(engine, 1, PRICE)
    assert entry is not None and entry.action == "buy" and entry.fills == []
    assert v.fake.balance("BTC") == pytest.approx(0.0999)
    [order] = v.orders(engine)
    assert (order["status"], order["fills"]) == ("fills_pending", 0)
    assert engine.position.qty == 0.0                         # not booked, not lost either
    if restart:
        engine = v.restart(engine)
        v.assert_book_is_the_account(engine)
    hold = v.bar(engine, 2, PRICE)
    assert hold is not None and hold.action == "hold"
    v.assert_book_is_the_account(engine)
    assert sum(v.fake.created.values()) == 1
    assert [(o["status"], o["fills"]) for o in v.orders(engine)] == [("filled", 1)]


def test_fills_out_of_sight_are_booked_from_the_order_totals_marked(venue: MakeVenue) -> None:
    v = venue(options={"newOrderRespType": {"market": "RESULT", "limit": "RESULT"}})
    broker = v.broker()
    broker.fill_lookups = 2
    engine = v.engine(broker)
    v.fake.fail_trades(100)
    v.bar(engine, 1, PRICE)
    assert [o["status"] for o in v.orders(engine)] == ["fills_pending"]
    assert engine.position.qty == 0.0
    engine.poll()                                              # the second look-up fails too
    [fill] = engine.state.fills()
    assert "booked from the order's filled/average/cost" in fill["note"]
    assert (fill["qty"], fill["price"]) == (pytest.approx(0.1), pytest.approx(PRICE))
    assert engine.pending == {}
    assert [o["status"] for o in v.orders(engine)] == ["filled"]
    stop = v.bar(engine, 2, STOP_PRICE)            # the exit sells what the account holds
    assert stop is not None and stop.qty == pytest.approx(0.0999)
    assert v.fake.balance("BTC") == 0.0


# -- case 4: unresolved exposure counts as exposure ---------------------------------------------

@pytest.mark.parametrize("restart", [False, True])
def test_an_order_lost_to_a_timeout_is_polled_and_nothing_opens_until_it_is_resolved(
        venue: MakeVenue, restart: bool) -> None:
    v = venue(env={"BDT_BOT__ORDER_ALERT_S": "0.01"})
    engine = v.engine(v.broker(timeout_ms=300))
    v.fake.delay_next_order(3.0)                  # placed and filled; the answer never comes
    # and the look-ups do not show it yet: before the send, the 2 after it, the one at the
    # restart, the one at bar 2
    v.fake.hide_next_lookups(4 + restart)
    entry = v.bar(engine, 1, PRICE)
    assert entry is not None and entry.action == "buy"
    assert [o["status"] for o in v.orders(engine)] == ["unknown"]
    assert v.fake.balance("BTC") == pytest.approx(0.0999)
    if restart:
        engine = v.restart(engine)                # the look-ups still miss it at start
        assert [o["status"] for o in v.orders(engine)] == ["unknown"]
    held = v.bar(engine, 2, PRICE)                # still not found: it counts as exposure
    assert held is not None and held.action == "hold"
    assert "opening refused: order(s) not final" in held.reason
    assert [a["alert"] for a in engine.alerts] == ["order_unresolved"]
    assert sum(v.fake.created.values()) == 1
    hold = v.bar(engine, 3, PRICE)                # found now: booked, and held
    assert hold is not None and hold.action == "hold"
    assert [o["status"] for o in v.orders(engine)] == ["filled"]
    v.assert_book_is_the_account(engine)
    assert sum(v.fake.created.values()) == 1


def test_an_order_that_never_reached_the_exchange_is_resolved(venue: MakeVenue) -> None:
    """The send is lost on the way: the exchange never hears of it. After its recvWindow it
    can no longer be placed, so once the exchange still does not know it `lost_order_s`
    later it is final ('rejected'), and trading goes on."""
    v = venue()
    engine = v.engine(v.broker(timeout_ms=300))
    v.fake.delay_next_order(3.0, record=False)
    v.bar(engine, 1, PRICE)
    assert [o["status"] for o in v.orders(engine)] == ["unknown"]
    held = v.bar(engine, 2, PRICE)
    assert held is not None and held.action == "hold"
    engine.broker.lost_after_s = 0.0              # (90 s by default)
    entry = v.bar(engine, 3, PRICE)
    assert entry is not None and entry.action == "buy"
    first, second = v.orders(engine)
    assert first["status"] == "rejected" and "never reached the exchange" in first["error"]
    assert second["status"] == "filled"
    v.assert_book_is_the_account(engine)


# -- case 5: an order's status and its fills are one transaction --------------------------------

def fail_once(obj: Any, name: str) -> list[int]:
    """``obj.name`` raises "disk full" on its next call, then works again."""
    real, calls = getattr(obj, name), []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real(*args, **kwargs)

    setattr(obj, name, failing)
    return calls


@pytest.mark.parametrize("restart", [False, True])
def test_a_failed_write_on_a_fill_bar_leaves_no_order_filled_without_its_fills(
        venue: MakeVenue, restart: bool) -> None:
    v = venue()
    engine = v.engine()
    fail_once(engine.state, "record_equity")
    with pytest.raises(sqlite3.OperationalError):
        v.bar(engine, 1, PRICE)                   # filled at the exchange, not recorded
    assert v.fake.balance("BTC") == pytest.approx(0.0999)
    for o in v.orders(engine):
        assert not (o["status"] == "filled" and o["fills"] == 0), o
    # memory is what the state holds: nothing booked, the order not final
    assert engine.position.qty == engine.state.position(SYMBOL).qty == 0.0
    assert list(engine.pending) == [o["client_id"] for o in v.orders(engine)]
    if restart:
        engine = v.restart(engine)
        v.assert_book_is_the_account(engine)
    stop = v.bar(engine, 2, STOP_PRICE)           # the order is resolved, then stopped out
    assert stop is not None and stop.action == "sell"
    v.assert_book_is_the_account(engine)
    engine = v.restart(engine)
    v.assert_book_is_the_account(engine)
    assert engine.position.is_flat and v.fake.balance("BTC") == 0.0


def test_a_failed_write_while_polling_books_nothing_twice(venue: MakeVenue) -> None:
    v = venue(options={"newOrderRespType": {"market": "RESULT", "limit": "RESULT"}})
    engine = v.engine()
    v.fake.lag_trades(1)
    v.bar(engine, 1, PRICE)
    fail_once(engine.state, "set_order_status")
    with pytest.raises(sqlite3.OperationalError):
        engine.poll()                             # fills and status roll back together
    assert engine.position.qty == engine.state.position(SYMBOL).qty == 0.0
    assert [o["fills"] for o in v.orders(engine)] == [0]
    engine.poll()
    v.assert_book_is_the_account(engine)
    assert [(o["status"], o["fills"]) for o in v.orders(engine)] == [("filled", 1)]


# -- case 6: orders the market's rules would refuse or alter -----------------------------------

@pytest.mark.parametrize("restart", [False, True])
def test_operator_flatten_sends_a_client_id_the_exchange_accepts(venue: MakeVenue,
                                                                 restart: bool) -> None:
    v = venue()
    engine = v.engine()
    v.bar(engine, 1, PRICE)
    if restart:
        engine = v.restart(engine)
    decision = engine.flatten("operator flatten", str(time.time_ns()))
    assert decision is not None and decision.action == "sell"
    [_, flatten] = v.orders(engine)
    assert flatten["status"] == "filled" and len(flatten["client_id"]) <= 36
    assert v.fake.balance("BTC") == 0.0
    v.assert_book_is_the_account(engine)


def test_an_order_is_fitted_to_the_lot_step_before_it_is_sent(venue: MakeVenue) -> None:
    """The strategy's step (1e-8) is finer than the market's (1e-5): the order is floored
    before it is recorded and sent, so the book's order is the exchange's order."""
    v = venue(env={"BDT_STRATEGY__QTY_STEP": "0.00000001"})
    engine = v.engine()
    v.bar(engine, 1, 49_999.0)                    # 0.1000020… BTC at 1e-8
    [order] = v.orders(engine)
    [placed] = v.fake.orders.values()
    assert order["qty"] == float(placed["origQty"]) == 0.1
    v.assert_book_is_the_account(engine)


def test_an_order_below_the_minimum_notional_is_not_sent(venue: MakeVenue) -> None:
    v = venue(env={"BDT_RISK__MAX_POSITION_QTY": "0.00008"})     # 4 USDT at 50,000
    engine = v.engine()
    decision = v.bar(engine, 1, PRICE)
    assert decision is not None and decision.action == "hold"
    assert "below the market's minimum 5" in decision.reason
    assert v.fake.create_requests == {}
    assert v.orders(engine) == []


# -- case 7: every exchange option an operator needs is settable in config ---------------------

def test_exchange_options_from_config_reach_the_live_broker(venue: MakeVenue) -> None:
    v = venue(options={"recvWindow": 20_000})
    broker = bot_service.live_broker(v.cfg, SYMBOL)
    try:
        assert broker._exchange.urls["api"]["private"] == f"{v.fake.base_url}/api/v3"
        broker.account()
        assert broker.submit(OrderRequest("opt-1", SYMBOL, "buy", 0.001), PRICE).status == \
            "filled"
        assert v.fake.recv_windows and set(v.fake.recv_windows) == {20_000}
    finally:
        broker.close()


@pytest.mark.parametrize("how", ["retry", "adjustForTimeDifference"])
@pytest.mark.parametrize("restart", [False, True])
def test_a_clock_ahead_of_the_exchange_does_not_leave_orders_unknown(
        venue: MakeVenue, how: str, restart: bool) -> None:
    """The local clock runs 5 s ahead of the exchange: every signed request is refused with
    -1021 until the clock offset is measured — by the broker when a request is refused, or
    by ccxt at start with options.adjustForTimeDifference from the config."""
    adjust = how == "adjustForTimeDifference"      # set in the config: the bot's own broker
    v = venue(options={"adjustForTimeDifference": True} if adjust else {})
    v.fake.clock_offset_ms = -5_000
    engine = v.engine(via_config=adjust)
    entry = v.bar(engine, 1, PRICE)
    assert entry is not None and entry.action == "buy"
    assert [o["status"] for o in v.orders(engine)] == ["filled"]
    assert engine.blocked is None
    if restart:
        engine = v.restart(engine, via_config=adjust)
    stop = v.bar(engine, 2, STOP_PRICE)
    assert stop is not None and stop.action == "sell"
    v.assert_book_is_the_account(engine)
    assert v.fake.balance("BTC") == 0.0
    if how == "adjustForTimeDifference":
        assert v.fake.clock_refusals == 0


# -- case 8: reconciled fills and fees in a third asset -----------------------------------------

def test_fills_booked_while_reconciling_count_in_the_loss_streak(venue: MakeVenue) -> None:
    """The stop's sell is placed and filled, then the bot dies before recording the answer.
    The restart books it while reconciling: a losing trade, which starts the cool-down
    (losses_before_cooldown 1) — and that survives the next restart, before any bar."""
    v = venue(env={"BDT_RISK__LOSSES_BEFORE_COOLDOWN": "1", "BDT_RISK__COOLDOWN_BARS": "5"})
    engine = v.engine()
    v.bar(engine, 1, PRICE)
    real_submit = engine.broker.submit

    def submit_then_die(*args: Any, **kwargs: Any) -> Any:
        real_submit(*args, **kwargs)
        raise Killed

    engine.broker.submit = submit_then_die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        v.bar(engine, 2, STOP_PRICE)
    assert v.fake.balance("BTC") == 0.0
    engine = v.restart(engine)                    # reconciles: books the losing sell
    v.assert_book_is_the_account(engine)
    fill_ts = engine.state.fills()[-1]["ts"]
    assert engine.risk.state.cooldown_until_ts == fill_ts + 5 * M
    engine = v.restart(engine)                    # and again, before any bar
    assert engine.risk.state.cooldown_until_ts == fill_ts + 5 * M


def test_a_fee_paid_in_bnb_is_converted_at_the_exchange_price(venue: MakeVenue) -> None:
    v = venue(bnb=1.0, fee_asset="BNB", bnb_price=600.0)
    engine = v.engine()
    v.bar(engine, 1, PRICE)
    bnb_fee = 0.1 * PRICE * FEE * 0.75 / 600.0
    assert v.fake.balance("BNB") == pytest.approx(1.0 - bnb_fee)
    [fill] = engine.state.fills()
    assert (fill["fee_asset"], fill["fee_asset_qty"]) == ("BNB", pytest.approx(bnb_fee))
    assert fill["fee"] == pytest.approx(3.75) == fill["fee_asset_value"]
    assert engine.position.realized_pnl == pytest.approx(-3.75)
    v.assert_book_is_the_account(engine)          # the USDT did not pay the fee
    assert engine.fees_excluded == {}


def test_a_fee_in_an_asset_without_a_price_is_reported_as_excluded(
        venue: MakeVenue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exchange charges BNB but lists no BNB/USDT market to price it with: the fee is
    left out of P&L, and the fill, the state and the bot's status say so."""
    v = venue(bnb=1.0, fee_asset="BNB", bnb_price=600.0, bnb_market=False)
    engine = v.engine()
    v.bar(engine, 1, PRICE)
    [fill] = engine.state.fills()
    assert fill["fee"] == 0.0 and "P&L excludes it" in fill["note"]
    bnb_fee = 0.1 * PRICE * FEE * 0.75 / 600.0
    assert engine.fees_excluded == {"BNB": pytest.approx(bnb_fee)}
    v.assert_book_is_the_account(engine)
    v.kill(engine)
    svc = bot(v, monkeypatch)                     # the bot on that state: `bdt bot status`
    try:
        status = svc.service_status()
        assert status["fees_excluded"] == {"BNB": pytest.approx(bnb_fee)}
        assert status["pnl_note"] == f"P&L excludes fees paid in assets without a price: " \
                                     f"{bnb_fee:g} BNB"
    finally:
        svc.close()


def test_a_state_file_from_before_gets_the_fee_columns(tmp_path: Path) -> None:
    """A database written before fills had their fee asset and note opens with them added
    (the old rows: quote fees, no note) and records the new ones."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE orders (client_id TEXT PRIMARY KEY, symbol TEXT NOT NULL,
            side TEXT NOT NULL, qty REAL NOT NULL, type TEXT NOT NULL, limit_price REAL,
            reason TEXT, bar_ts INTEGER NOT NULL, status TEXT NOT NULL, exchange_id TEXT,
            error TEXT, created_at REAL, updated_at REAL);
        CREATE TABLE fills (id INTEGER PRIMARY KEY AUTOINCREMENT,
            client_id TEXT NOT NULL REFERENCES orders(client_id), symbol TEXT NOT NULL,
            side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL,
            ts INTEGER NOT NULL, liquidity TEXT NOT NULL, realized_pnl REAL NOT NULL);
        INSERT INTO orders VALUES ('o1', 'BTC/USDT', 'buy', 0.1, 'market', NULL, 'entry', 1,
                                   'filled', '7', NULL, 1.0, 1.0);
        INSERT INTO fills (client_id, symbol, side, qty, price, fee, ts, liquidity,
                           realized_pnl) VALUES ('o1', 'BTC/USDT', 'buy', 0.1, 100.0, 0.01, 1,
                                                 'taker', -0.01);
    """)
    con.commit()
    con.close()
    db = TradingDB(path)
    try:
        [old] = db.fills()
        assert (old["fee"], old["fee_asset"], old["fee_asset_qty"], old["note"]) == \
            (0.01, "", 0.0, "")
    finally:
        db.close()
