"""LiveFeed against a local fake Binance trade stream (loopback only, no internet)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("ccxt.pro")

from shared.config import load_config  # noqa: E402
from shared.market.bars import Bar  # noqa: E402
from shared.market.feed_live import LiveFeed  # noqa: E402
from shared.market.feeds import open_feed  # noqa: E402
from shared.market.files import FeedError  # noqa: E402
from tests.fake_exchange import SYMBOL, FakeBinance  # noqa: E402

TF = 1_000  # 1 s bars keep the tests short


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    server = FakeBinance().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def feed(fake: FakeBinance) -> Iterator[LiveFeed]:
    live = LiveFeed("binance", SYMBOL, TF, exchange_options=fake.ccxt_options(),
                    initial_backoff_s=0.05, max_backoff_s=0.2, grace_ms=100)
    try:
        live.start()
        assert fake.wait_subscriptions(1), "LiveFeed never subscribed"
        yield live
    finally:
        live.close()
    assert not live.running


def next_bar_start() -> int:
    """An interval start at least 1 s ahead, so no bar is closed by the timer before its
    trades are sent (trades carry real-time timestamps, as the timer compares with the clock)."""
    now = int(time.time() * 1000)
    return now - now % TF + 2 * TF


def trade(tid: int, ts: int, price: float, amount: float) -> dict[str, Any]:
    return {"id": tid, "ts": ts, "price": price, "amount": amount}


def take(feed: LiveFeed, n: int, timeout: float = 8.0) -> list[Bar]:
    """The first ``n`` bars, or fewer if ``timeout`` passes (the feed is then closed)."""
    got: list[Bar] = []
    timer = threading.Timer(timeout, feed.close)
    timer.start()
    try:
        for bar in feed.bars():
            got.append(bar)
            if len(got) >= n:
                break
    finally:
        timer.cancel()
    return got


def test_trades_become_closed_bars(fake: FakeBinance, feed: LiveFeed) -> None:
    t0 = next_bar_start()
    fake.send_trades([
        trade(1, t0 + 100, 100.0, 1.0), trade(2, t0 + 400, 105.0, 0.5),
        trade(3, t0 + 700, 98.0, 2.0), trade(4, t0 + 900, 101.0, 1.5),
        trade(5, t0 + TF + 100, 102.0, 1.0), trade(6, t0 + TF + 800, 103.0, 1.0),
        trade(7, t0 + 2 * TF + 50, 104.0, 3.0),     # its bar is closed by the timer
    ])
    bars = take(feed, 3)
    assert [b.ts for b in bars] == [t0, t0 + TF, t0 + 2 * TF]
    assert bars[0] == Bar(SYMBOL, t0, 100.0, 105.0, 98.0, 101.0, 5.0, 4)
    assert bars[1] == Bar(SYMBOL, t0 + TF, 102.0, 103.0, 102.0, 103.0, 2.0, 2)
    assert bars[2] == Bar(SYMBOL, t0 + 2 * TF, 104.0, 104.0, 104.0, 104.0, 3.0, 1)
    assert feed.trades_seen == 7 and feed.last_trade_ts == t0 + 2 * TF + 50
    assert feed.gaps == [] and feed.reconnects == 0


def test_reconnects_after_drop_and_reports_gap(fake: FakeBinance, feed: LiveFeed,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bdt.feed.live")
    t0 = next_bar_start()
    fake.send_trades([trade(1, t0 + 100, 100.0, 1.0), trade(2, t0 + 300, 101.0, 1.0)])
    deadline = time.monotonic() + 5
    while feed.trades_seen < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert feed.trades_seen == 2
    assert fake.drop_connections() == 1
    assert fake.wait_subscriptions(2), "LiveFeed did not re-subscribe"
    # the exchange replays trade 2 (must not count twice), then ids jump 2 -> 5
    fake.send_trades([trade(2, t0 + 300, 101.0, 1.0), trade(5, t0 + 600, 99.0, 2.0),
                      trade(6, t0 + TF + 200, 103.0, 1.0)])
    bars = take(feed, 2)
    assert feed.reconnects >= 1 and fake.connections >= 2
    assert bars[0] == Bar(SYMBOL, t0, 100.0, 101.0, 99.0, 99.0, 4.0, 3)
    assert bars[1] == Bar(SYMBOL, t0 + TF, 103.0, 103.0, 103.0, 103.0, 1.0, 1)
    assert feed.duplicates == 1 and feed.trades_seen == 4
    assert len(feed.gaps) == 1
    gap = feed.gaps[0]
    assert (gap["from_ts"], gap["to_ts"]) == (t0 + 300, t0 + 600)
    assert "reconnect" in gap["reason"] and "2 -> 5" in gap["reason"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("reconnect #1" in m for m in warnings) and any("gap" in m for m in warnings)


def test_unknown_symbol_ends_bars_with_feed_error(fake: FakeBinance) -> None:
    live = LiveFeed("binance", "NOPE/USDT", TF, exchange_options=fake.ccxt_options())
    try:
        with pytest.raises(FeedError, match="NOPE/USDT"):
            take(live, 1, timeout=5)
    finally:
        live.close()
    assert live.reconnects == 0 and not live.running


def test_duplicate_trades_counted_once(fake: FakeBinance, feed: LiveFeed) -> None:
    t0 = next_bar_start()
    fake.send_trades([trade(1, t0 + 100, 100.0, 1.0), trade(2, t0 + 200, 102.0, 1.0),
                      trade(2, t0 + 200, 102.0, 1.0), trade(3, t0 + 300, 101.0, 1.0)])
    fake.send_trades([trade(1, t0 + 100, 100.0, 1.0), trade(3, t0 + 300, 101.0, 1.0),
                      trade(4, t0 + TF + 10, 101.0, 1.0)])
    bars = take(feed, 1)
    assert bars == [Bar(SYMBOL, t0, 100.0, 102.0, 100.0, 101.0, 3.0, 3)]
    assert feed.trades_seen == 4 and feed.duplicates == 3 and feed.gaps == []


def test_unknown_exchange_is_a_feed_error() -> None:
    with pytest.raises(FeedError, match="nosuchexchange"):
        LiveFeed("nosuchexchange", SYMBOL, TF)


def test_open_feed_builds_live_feed_without_connecting(var_dir) -> None:
    env = {"BDT_VAR": str(var_dir), "BDT_MARKET__FEED": "live"}
    live = open_feed(load_config(env), SYMBOL)
    assert isinstance(live, LiveFeed) and live.name == "live"
    live.close()    # never started: nothing to stop, bars() would end at once
    assert list(live.bars()) == []
    with pytest.raises(FeedError, match="nosuchexchange"):
        open_feed(load_config({**env, "BDT_MARKET__EXCHANGE": "nosuchexchange"}), SYMBOL)
