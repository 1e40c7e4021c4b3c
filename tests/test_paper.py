import pytest

from shared.config import load_config
from shared.market.bars import Bar
from shared.trading.broker_paper import DuplicateOrderError, PaperBroker
from shared.trading.fills import FillModel
from shared.trading.types import OrderRequest, Position, apply_fill

SYM = "BTC/USDT"
# ref 100: half spread 0.0005 + slippage 0.0005 = 0.001 adverse → buy 100.1, sell 99.9
FM = FillModel(fee_taker=0.001, fee_maker=0.0002, spread=0.001, slippage=0.0005)


def market(cid: str, side: str, qty: float = 1.0) -> OrderRequest:
    return OrderRequest(cid, SYM, side, qty)


def limit(cid: str, side: str, price: float, qty: float = 1.0) -> OrderRequest:
    return OrderRequest(cid, SYM, side, qty, type="limit", limit_price=price)


def bar(o: float, h: float, lo: float, c: float, ts: int = 60_000) -> Bar:
    return Bar(SYM, ts, o, h, lo, c, 1.0)


def test_from_config_and_cost_per_side():
    fm = FillModel.from_config(load_config({}))
    assert fm == FillModel(fee_taker=0.0004, fee_maker=0.0002, spread=0.0001, slippage=0.00005)
    # 0.00005 + 0.00005 + 0.0004
    assert fm.cost_per_side() == pytest.approx(0.0005, abs=1e-15)
    assert FM.cost_per_side() == pytest.approx(0.002, abs=1e-15)


@pytest.mark.parametrize("kw", [{"fee_taker": -0.001}, {"spread": float("nan")},
                                {"slippage": 0.6, "spread": 0.8}, {"fee_maker": True}])
def test_bad_fill_model_refused(kw):
    args = {"fee_taker": 0.001, "fee_maker": 0.0, "spread": 0.0, "slippage": 0.0} | kw
    with pytest.raises(ValueError):
        FillModel(**args)


def test_market_buy_and_sell_prices_and_fees():
    buy = FM.market_fill(market("b", "buy", 2.0), 100.0, 123)
    assert buy.price == pytest.approx(100.1, abs=1e-12)
    assert buy.fee == pytest.approx(2 * 0.1001, abs=1e-12)       # 2 × 100.1 × 0.001
    assert (buy.ts, buy.liquidity, buy.side, buy.qty, buy.client_id) == \
        (123, "taker", "buy", 2.0, "b")
    sell = FM.market_fill(market("s", "sell", 2.0), 100.0, 124)
    assert sell.price == pytest.approx(99.9, abs=1e-12)
    assert sell.fee == pytest.approx(2 * 0.0999, abs=1e-12)
    assert sell.liquidity == "taker"


def test_market_fill_rejects_bad_input():
    with pytest.raises(ValueError, match="ref_price"):
        FM.market_fill(market("b", "buy"), 0.0, 1)
    with pytest.raises(ValueError, match="ref_price"):
        FM.market_fill(market("b", "buy"), float("nan"), 1)
    with pytest.raises(ValueError, match="market order"):
        FM.market_fill(limit("l", "buy", 99.0), 100.0, 1)


@pytest.mark.parametrize(
    ("side", "lim", "b", "price"),
    [
        ("buy", 99.0, bar(100, 101, 99.0, 100), 99.0),     # low touches the limit exactly
        ("buy", 99.0, bar(100, 101, 98.0, 100), 99.0),     # trades through: still the limit
        ("buy", 99.0, bar(100, 101, 99.01, 100), None),    # one cent short: no fill
        ("buy", 99.0, bar(98.5, 99.5, 98.0, 99), 98.5),    # opens below the limit: the open
        ("buy", 99.0, bar(99.0, 99.5, 98.0, 99), 99.0),    # opens at the limit: the limit
        ("sell", 101.0, bar(100, 101.0, 99, 100), 101.0),  # high touches exactly
        ("sell", 101.0, bar(100, 100.99, 99, 100), None),  # no touch
        ("sell", 101.0, bar(101.5, 102, 101, 101), 101.5),  # opens above the limit: the open
    ],
)
def test_limit_fills(side, lim, b, price):
    fill = FM.limit_fill(limit("l", side, lim, 2.0), b)
    if price is None:
        assert fill is None
        return
    assert fill is not None
    assert fill.price == price
    assert fill.fee == pytest.approx(2.0 * price * 0.0002, abs=1e-12)
    assert (fill.liquidity, fill.ts, fill.qty) == ("maker", b.ts, 2.0)


def test_limit_fill_other_symbol_refused():
    other = Bar("ETH/USDT", 0, 10, 10, 10, 10, 1)
    with pytest.raises(ValueError, match="cannot fill"):
        FM.limit_fill(limit("l", "buy", 99.0), other)


def test_broker_market_fills_at_once_and_refuses_duplicates():
    broker = PaperBroker(FM)
    result = broker.submit(market("m1", "buy"), 100.0, 5)
    fills = result.fills
    assert result.status == "filled"
    assert len(fills) == 1 and fills[0].price == pytest.approx(100.1, abs=1e-12)
    with pytest.raises(DuplicateOrderError, match="m1"):
        broker.submit(market("m1", "buy"), 100.0, 6)
    # a market order refused for a bad price does not burn its client id
    with pytest.raises(ValueError):
        broker.submit(market("m2", "buy"), -1.0, 7)
    assert len(broker.submit(market("m2", "buy"), 100.0, 7).fills) == 1


def test_broker_limit_rests_fills_once_and_refuses_duplicates():
    broker = PaperBroker(FM)
    order = limit("l1", "buy", 99.0)
    result = broker.submit(order, 100.0, 0)
    assert result.status == "open" and result.fills == []
    assert broker.open_orders() == [order]
    with pytest.raises(DuplicateOrderError):            # open
        broker.submit(order, 100.0, 0)
    assert broker.on_bar(bar(100, 101, 99.5, 100, ts=60_000)) == []
    assert broker.open_orders() == [order]
    fills = broker.on_bar(bar(100, 101, 98.0, 99, ts=120_000))
    assert [(f.client_id, f.price, f.ts) for f in fills] == [("l1", 99.0, 120_000)]
    assert broker.open_orders() == []
    assert broker.on_bar(bar(90, 91, 89, 90, ts=180_000)) == []   # never fills twice
    with pytest.raises(DuplicateOrderError):            # filled
        broker.submit(order, 100.0, 0)


def test_broker_ignores_other_symbols_on_bar():
    broker = PaperBroker(FM)
    broker.submit(limit("l1", "buy", 99.0), 100.0, 0)
    assert broker.on_bar(Bar("ETH/USDT", 60_000, 50, 50, 1, 50, 1)) == []
    assert len(broker.open_orders()) == 1


def test_cancel():
    broker = PaperBroker(FM)
    broker.submit(limit("a", "buy", 99.0), 100.0, 0)
    broker.submit(limit("b", "sell", 101.0), 100.0, 0)
    assert broker.cancel("a") is True
    assert broker.cancel("a") is False                  # already gone
    assert broker.cancel("nope") is False
    assert [o.client_id for o in broker.open_orders()] == ["b"]
    # a bar touching both limits fills only the one still open
    assert [f.client_id for f in broker.on_bar(bar(100, 102, 98, 100))] == ["b"]
    with pytest.raises(DuplicateOrderError):            # a cancelled id is not revived
        broker.submit(limit("a", "buy", 99.0), 100.0, 0)


def test_round_trip_net_pnl_through_apply_fill():
    # buy 2 @ 100.1 (fee 0.2002), sell 2 @ ref 110 → 110 × 0.999 = 109.89 (fee 0.21978)
    # gross (109.89 − 100.1) × 2 = 19.58; net = 19.58 − 0.2002 − 0.21978 = 19.16002
    broker = PaperBroker(FM)
    pos = Position(SYM)
    total = 0.0
    for fill in broker.submit(market("o1", "buy", 2.0), 100.0, 60_000).fills:
        total += apply_fill(pos, fill, 60_000)
    assert pos.qty == 2.0 and pos.avg_price == pytest.approx(100.1, abs=1e-12)
    for fill in broker.submit(market("o2", "sell", 2.0), 110.0, 120_000).fills:
        total += apply_fill(pos, fill, 120_000)
    assert pos.is_flat
    assert total == pytest.approx(19.16002, abs=1e-9)
    assert pos.realized_pnl == pytest.approx(19.16002, abs=1e-9)
