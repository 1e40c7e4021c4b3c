"""Trading numbers you can trust (issue 23): every order fits what the account can pay, a
position of n lots exits with exactly n lots, and a report says what is still open, what was
reduced or refused, and how much of its range the model was trained on.

Each case the issue found on the running system is a test here, with the value it must have.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from shared.backtest.jobs import default_range, trained_to_ts
from shared.backtest.runner import BacktestSpec, run_backtest
from shared.config import ConfigError, load_config
from shared.market.bars import Bar
from shared.storage.bar_store import open_store
from shared.trading.account import BUYING_POWER, NO_SHORT, BuyingPower, fit_to_account
from shared.trading.engine import TradingEngine
from shared.trading.lots import lots, lots_qty, to_step
from shared.trading.memory_state import MemoryState
from shared.trading.types import Balance, Intent, MarketRules, OrderRequest, Position
from tests.helpers import child_env, store_closes

M = 60_000
DAY = 86_400_000
SYM = "BTC/USDT"
T0 = 1_700_006_400_000          # a UTC midnight





def waves(n: int, level: float, amplitude: float, period: int = 80) -> list[float]:
    """Closes swinging around ``level``: an SMA 10/30 cross every half period."""
    return [round(level + amplitude * math.sin(2 * math.pi * i / period), 8) for i in range(n)]


# -- case 1: cash that does not exist ----------------------------------------------------------

def test_sma_size_one_btc_on_ten_thousand_cash_buys_what_the_cash_pays(var_dir: Path) -> None:
    """`bdt backtest --strategy sma_cross --set strategy.sma_size=1 --set
    paper.starting_cash=10000` on BTC near 36–40k: it bought 1.0 BTC ten times (notional up to
    3.9× the cash) and said nothing. Now every buy is what the cash pays, and the report
    counts each reduction."""
    cfg = load_config({"BDT_VAR": str(var_dir)})
    store_closes(cfg, waves(900, 38_000, 2_000))
    done = subprocess.run(
        ["bdt", "backtest", "--strategy", "sma_cross", "--set", "strategy.sma_size=1",
         "--set", "paper.starting_cash=10000", "--from", str(T0), "--to", str(T0 + 900 * M),
         "--json"], capture_output=True, text=True, env=child_env(var_dir), timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads((Path(json.loads(done.stdout)["path"]) / "report.json").read_text())
    trades, m = doc["trades"], doc["metrics"]
    assert len(trades) >= 5
    cash = 10_000.0
    fee = cfg.get("paper.fee_taker")
    for t in trades:
        cost = t["qty"] * t["entry_price"] * (1 + fee)
        assert cost <= cash + 1e-6, (t, cash)
        assert cost > cash - t["entry_price"] * 1e-5 * (1 + fee) - 1e-6   # all whole lots it can
        cash += t["pnl"]
    buys = sum(1 for t in trades) + doc["metrics"]["open_positions"]
    assert m["rejected_entries"][f"{BUYING_POWER}: reduced"] == buys
    assert any(f"{BUYING_POWER}: reduced ×{buys}" in line for line in doc["headline"])


def test_an_order_that_does_not_fit_is_reduced_to_whole_lots_or_refused() -> None:
    order = OrderRequest("c", SYM, "buy", 1.0)
    fitted, note, rule = fit_to_account(order, 40_000.0, 0.001, 1e-5,
                                        BuyingPower(10_000.0, 0.0), "USDT", "BTC")
    assert fitted is not None and fitted.qty == to_step(10_000 / 40_040, 1e-5) == 0.24975
    assert rule == BUYING_POWER and "qty 1 → 0.24975" in note and "free USDT 10,000.00" in note
    fitted, note, rule = fit_to_account(order, 40_000.0, 0.001, 1e-5, BuyingPower(0.3, 0.0))
    assert fitted is None and note.startswith(f"{BUYING_POWER}: refused, not one lot")
    sell = OrderRequest("s", SYM, "sell", 0.5)
    fitted, note, rule = fit_to_account(sell, 40_000.0, 0.001, 1e-5, BuyingPower(0.0, 0.2))
    assert fitted is not None and fitted.qty == 0.2 and rule == NO_SHORT
    assert fit_to_account(sell, 40_000.0, 0.001, 1e-5, BuyingPower(0.0, 0.5))[1:] == ("", "")


def test_resting_orders_reserve_what_they_will_pay() -> None:
    rows = [{"side": "buy", "qty": 0.1, "limit_price": 30_000.0},
            {"side": "sell", "qty": 0.05, "limit_price": 50_000.0}]
    power = BuyingPower.of(10_000.0, 0.2, rows, 40_000.0, 0.001)
    assert power.quote_free == pytest.approx(10_000 - 0.1 * 30_000 * 1.001)
    assert power.base_free == pytest.approx(0.15)


def test_the_paper_engine_never_spends_more_than_its_cash(var_dir: Path) -> None:
    """The bot's engine (the same as the backtest's): an intent far beyond the cash buys what
    the cash pays, fee included, and cash never goes below zero."""
    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_STRATEGY__NAME": "sma_cross",
                       "BDT_PAPER__STARTING_CASH": "1000"})
    engine = TradingEngine(cfg, MemoryState(), SYM, M)
    bar = Bar(SYM, T0, 40_000, 40_000, 40_000, 40_000, 1.0)
    engine.risk.on_bar(bar, engine.equity(bar.close))
    decision = engine.execute(bar, Intent(5.0, "want 5 BTC"), "want 5 BTC", None)
    assert decision.limited == BUYING_POWER and 0 < decision.qty < 0.025
    assert engine.cash >= 0.0 and engine.cash < 40_000 * 1e-5 * 1.01
    assert "buying power: qty 5 → " in decision.reason


def test_a_short_sale_is_refused_at_config_load() -> None:
    with pytest.raises(ConfigError, match="strategy.allow_short = true: a short sale needs a "
                                          "margin account"):
        load_config({"BDT_STRATEGY__ALLOW_SHORT": "true"})


def test_limits_that_make_every_entry_impossible_are_refused_at_load() -> None:
    with pytest.raises(ConfigError, match=r"risk.max_position_qty \(5e-06\) is below one lot"):
        load_config({"BDT_RISK__MAX_POSITION_QTY": "0.000005"})
    with pytest.raises(ConfigError, match=r"strategy.sma_size \(1e-06\) is below one lot"):
        load_config({"BDT_STRATEGY__NAME": "sma_cross", "BDT_STRATEGY__SMA_SIZE": "0.000001"})


# -- case 4: cheap assets trade nothing ---------------------------------------------------------

def test_a_pair_priced_at_a_fraction_of_a_cent_gets_a_sensible_size(var_dir: Path) -> None:
    """On a pair priced 0.002 every entry was clipped by max_position_qty 1 (156 of 156): the
    report showed +0.00 %. The default caps a position in quote currency (max_notional)."""
    cfg = load_config({"BDT_VAR": str(var_dir)})
    store_closes(cfg, waves(900, 0.002, 0.0002), "DOGE/USDT")
    result = run_backtest(cfg, BacktestSpec("DOGE/USDT", T0, T0 + 900 * M,
                                            {"strategy.name": "sma_cross",
                                             "strategy.sma_size_mode": "equity_fraction",
                                             "strategy.sma_size": "0.5",
                                             "strategy.qty_step": "1"}))
    assert result.trades
    assert not any("max_position_qty" in rule for rule in result.metrics["rejected_entries"])
    notional = [t.qty * t.entry_price for t in result.trades]
    assert min(notional) > 4_000          # half the equity, not 1 coin worth 0.002


# -- case 2: an open position at the end --------------------------------------------------------

def test_a_position_open_at_the_end_is_listed_with_its_cost_to_close(var_dir: Path) -> None:
    """Fills buy, sell, buy: one closed round trip, and the last buy still held. It was
    marked at the last close with no exit cost and nothing said a position was open."""
    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_STRATEGY__SMA_FAST": "2",
                       "BDT_STRATEGY__SMA_SLOW": "3", "BDT_STRATEGY__SMA_SIZE": "2"})
    closes = [10, 10, 9, 12, 14, 16, 13, 8, 8, 7, 6, 9, 12, 14]
    store_closes(cfg, closes)
    result = run_backtest(cfg, BacktestSpec(SYM, T0, T0 + len(closes) * M,
                                            {"strategy.name": "sma_cross"}))
    assert result.metrics["trades"] == 1 == len(result.trades)
    [p] = result.open_positions
    fm = cfg.section("paper")
    exit_price = 14 * (1 - fm["spread"] / 2 - fm["slippage"])
    assert p["qty"] == 2 and p["mark"] == 14
    assert p["cost_to_close"] == pytest.approx(2 * (14 - exit_price) + 2 * exit_price
                                               * fm["fee_taker"])
    assert p["unrealized_pnl"] == pytest.approx(2 * (14 - p["avg_price"]))
    m = result.metrics
    assert m["open_positions"] == 1
    assert m["total_return_after_close"] == pytest.approx(
        m["total_return"] - p["cost_to_close"] / m["starting_equity"])
    assert result.headline[0].startswith("position open at the end: 2 BTC/USDT bought at")


# -- case 5: one lot short ----------------------------------------------------------------------

@pytest.mark.parametrize("step,count", [(1e-6, 100_000), (1e-8, 20_000), (0.001, 20_000),
                                        (1.0, 20_000)])
def test_a_position_of_n_lots_exits_with_exactly_n_lots(var_dir: Path, step: float,
                                                        count: int) -> None:
    """Step 1e-6: held n × 1e-6 (n = 1…100,000), the exit sent one step less for 29,036 of
    them (held 5e-06, sent 0.00000400): the quantity was a float difference, then floored
    by the venue's precision. Through the engine's sizing and the live broker's fit with the
    venue's rules: 0 wrong."""
    from shared.trading.broker_live import LiveBroker

    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_STRATEGY__QTY_STEP": repr(step)})
    broker = LiveBroker.__new__(LiveBroker)        # fit() needs only rules and holdings
    held = {"qty": 0.0}
    broker.rules = lambda: MarketRules(step=step)   # type: ignore[method-assign]
    broker._holdings = lambda: Balance("BTC", "USDT", held["qty"], held["qty"], 0.0, 0.0)  # type: ignore[method-assign]
    engine = TradingEngine(cfg, MemoryState(), SYM, M, broker=broker)  # type: ignore[arg-type]
    bar = Bar(SYM, T0, 50_000, 50_000, 50_000, 50_000, 1.0)
    wrong = []
    for n in range(1, count + 1):
        qty = float(Decimal(n) * Decimal(repr(step)))         # what the venue says is held
        held["qty"] = qty
        engine.position = Position(SYM, qty, 50_000.0, T0)
        order, reason, _ = engine.size_order(Intent(0.0, "exit"), bar, "exit")
        if order is None or order.qty != qty or to_step(order.qty, step) != qty:
            wrong.append((n, order.qty if order else None, reason))
    assert wrong == []


def test_lots_are_counted_in_decimal() -> None:
    assert lots(3.0000000000000004e-05, 1e-5) == 3
    assert lots_qty(5, 1e-6) == 5e-06 and repr(lots_qty(5, 1e-6)) == "5e-06"
    assert lots_qty(3, 0.1) == 0.3
    with pytest.raises(ValueError, match="lot step must be a positive"):
        lots(1.0, 0.0)


def test_a_book_built_from_fills_exits_in_whole_lots(var_dir: Path) -> None:
    """Three buys of 0.1, 0.2 and 0.00001 (float sums leave dust) sell 0.30001 at once."""
    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_STRATEGY__NAME": "sma_cross",
                       "BDT_PAPER__STARTING_CASH": "100000"})
    engine = TradingEngine(cfg, MemoryState(), SYM, M)
    for i, target in enumerate([0.1, 0.3, 0.30001]):
        bar = Bar(SYM, T0 + i * M, 100, 100, 100, 100, 1.0)
        engine.risk.on_bar(bar, engine.equity(100))
        engine.execute(bar, Intent(target, "add"), "add", None)
    assert engine.position.qty == 0.30001
    bar = Bar(SYM, T0 + 3 * M, 100, 100, 100, 100, 1.0)
    decision = engine.execute(bar, Intent(0.0, "exit"), "exit", None)
    assert decision.qty == 0.30001 and engine.position.is_flat


# -- case 3: in sample without a word -----------------------------------------------------------

def test_a_backtest_inside_the_training_window_says_so(tmp_path: Path) -> None:
    from shared.market.synthetic import SyntheticMarket
    from shared.models.fitting import train_and_register
    from shared.models.registry import ModelRegistry

    cfg = load_config({"BDT_VAR": str(tmp_path / "var"), "BDT_MODEL__MIN_TRAIN_BARS": "500"})
    frame = SyntheticMarket(SYM, M, 21, start_ts=T0).frame(3 * 1440)
    s = open_store(cfg)
    s.insert_frame(SYM, frame)
    s.close()
    train_and_register(frame.head(1440), ModelRegistry(cfg.model_dir), horizon=15)
    trained_to = trained_to_ts(cfg)
    assert trained_to == T0 + 1439 * M
    inside = run_backtest(cfg, BacktestSpec(SYM, T0 + 720 * M, T0 + DAY))
    assert inside.metrics["in_sample"]["share"] == pytest.approx(1.0)
    assert any(line.startswith("in sample: 100% of the range") for line in inside.headline)
    after = run_backtest(cfg, BacktestSpec(SYM, T0 + DAY, T0 + 2 * DAY))
    assert after.metrics["in_sample"]["share"] == 0
    assert not any(line.startswith("in sample") for line in after.headline)
    # the nightly default range starts after the model's window when it can …
    cfg1 = load_config({"BDT_VAR": str(tmp_path / "var"), "BDT_BACKTEST__WINDOW_DAYS": "2"})
    start, end = default_range(cfg1, SYM, trained_to_ts(cfg1))
    assert (start, end) == (T0 + DAY, T0 + 2 * DAY)
    # … and for a strategy without a model nothing moves
    assert trained_to_ts(cfg1, "sma_cross") is None


def test_a_strategy_without_a_model_imports_no_model_code(var_dir: Path) -> None:
    """Issue 27: `bdt backtest --strategy sma_cross` imported lightgbm, sklearn, scipy, pandas
    and pyarrow through the loop's volatility feed (~2 s and ~240 MiB for nothing)."""
    cfg = load_config({"BDT_VAR": str(var_dir)})
    store_closes(cfg, waves(600, 38_000, 2_000))
    script = ("import sys\nfrom shared.cli import main\n"
              f"rc = main(['backtest', '--strategy', 'sma_cross', '--from', '{T0}'])\n"
              "heavy = [m for m in ('lightgbm', 'sklearn', 'scipy', 'pandas', 'pyarrow', 'arch')"
              " if m in sys.modules]\nprint('RESULT', rc, heavy)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=child_env(var_dir), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "RESULT 0 []" in done.stdout, done.stdout
