"""The backtest (issue 13): the live trading engine fed from the store. Hand-computed fills,
fees and P&L on a tiny series; the batch inference equal to the live predictor's; chunked and
one-shot runs identical; reports written; a range under a small memory cap finishes by
shrinking its chunks."""

from __future__ import annotations

import json
import math
import subprocess

import polars as pl
import pytest

from shared.backtest.inference import predict_frame
from shared.backtest.jobs import default_range, run_and_report
from shared.backtest.metrics import round_trips
from shared.backtest.runner import BacktestSpec, run_backtest
from shared.config import load_config
from shared.market.bars import Bar
from shared.market.synthetic import SyntheticMarket
from shared.models.features import IncrementalFeatures
from shared.models.fitting import train_and_register
from shared.models.model_set import VolatilityFeed, VolatilityTrack
from shared.models.registry import ModelRegistry
from shared.storage.bar_store import open_store
from shared.trading.strategies import SmaCross
from shared.trading.types import Position
from tests.cgroup_helpers import remove_tree, unique_tree, writable_backend
from tests.helpers import child_env, store_closes

M = 60_000
SYM = "BTC/USDT"
T0 = 1_700_006_400_000          # a UTC midnight





def test_sma_cross_fills_fees_and_pnl_by_hand(var_dir):
    """SMA 2/3 on closes 10,10,9,12,14,16,13,8,8: the golden cross is at bar 3 (SMA2 10.5 >
    SMA3 10.33 after 9.5 < 9.67), the death cross at bar 7 (10.5 < 12.33 after 14.5 > 14.33).
    Costs: spread 1%, slippage 0.5%, fee 0.1%; size 2."""
    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_PAPER__SPREAD": "0.01",
                       "BDT_PAPER__SLIPPAGE": "0.005", "BDT_PAPER__FEE_TAKER": "0.001",
                       "BDT_STRATEGY__SMA_FAST": "2", "BDT_STRATEGY__SMA_SLOW": "3",
                       "BDT_STRATEGY__SMA_SIZE": "2", "BDT_RISK__MAX_POSITION_QTY": "5"})
    store_closes(cfg, [10, 10, 9, 12, 14, 16, 13, 8, 8])
    result = run_backtest(cfg, BacktestSpec(SYM, T0, T0 + 9 * M, {"strategy.name": "sma_cross"}))
    [trade] = result.trades
    assert trade.qty == 2
    buy = 12 * (1 + 0.005 + 0.005)                   # close × (1 + spread/2 + slippage)
    sell = 8 * (1 - 0.005 - 0.005)
    fees = 2 * buy * 0.001 + 2 * sell * 0.001
    assert (trade.entry_ts, trade.exit_ts) == (T0 + 3 * M, T0 + 7 * M)
    assert trade.entry_price == pytest.approx(buy) and trade.exit_price == pytest.approx(sell)
    assert trade.fees == pytest.approx(fees)
    assert trade.pnl == pytest.approx(2 * (sell - buy) - fees)
    m = result.metrics
    assert m["final_equity"] == pytest.approx(10_000 + trade.pnl)
    assert m["trades"] == 1 and m["fees_paid"] == pytest.approx(fees)
    assert m["exposure"] == pytest.approx(4 / 9)     # in the market after bars 3, 4, 5, 6
    tie = SmaCross(2, 3, 1.0, "qty", 0.001)          # a tie is not a cross (backtesting.py's)
    flat = Position(SYM)
    for i, close in enumerate([10.0, 10, 10, 12]):
        intent = tie.decide(Bar(SYM, i * M, close, close, close, close, 1), None, flat, 1e4,
                            0.0, M, None)
    assert intent.target_qty == 0 and intent.reason == "no cross"
    assert m["sharpe"] == {"withheld": "0.0 days: annualized figures need at least 30 days"}


def test_stop_and_time_limit_exits_are_the_engines(var_dir):
    """The ml rules need a model; their exits are the engine's own (tests/test_engine.py).
    Here: round trips are reconstructed from fills exactly, a flip included."""
    fills = [
        {"ts": 1, "side": "buy", "qty": 2.0, "price": 10.0, "fee": 0.02, "realized_pnl": -0.02,
         "reason": "long"},
        {"ts": 2, "side": "sell", "qty": 3.0, "price": 11.0, "fee": 0.033,
         "realized_pnl": 2 - 0.033, "reason": "flip"},
        {"ts": 3, "side": "buy", "qty": 1.0, "price": 10.5, "fee": 0.0105,
         "realized_pnl": 0.5 - 0.0105, "reason": "cover"},
    ]
    first, second = round_trips(fills)
    assert (first.side, first.qty, first.entry_price, first.exit_price) == ("long", 2, 10, 11)
    assert first.pnl == pytest.approx(-0.02 + 2 - 0.033)
    assert (second.side, second.qty, second.entry_price, second.exit_price) == \
        ("short", 1.0, 11.0, 10.5)


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """3 days of a synthetic market with a long gap, stored; a model trained on day 1."""
    var = tmp_path_factory.mktemp("bt") / "var"
    cfg = load_config({"BDT_VAR": str(var), "BDT_MODEL__MIN_TRAIN_BARS": "500"})
    frame = SyntheticMarket(SYM, M, 21, start_ts=T0).frame(4320)
    frame = frame.with_columns(pl.when(pl.col("ts") >= T0 + 2500 * M)
                               .then(pl.col("ts") + 600 * M).otherwise(pl.col("ts")))
    store = open_store(cfg)
    store.insert_frame(SYM, frame)
    store.close()
    train_and_register(frame.head(1440), ModelRegistry(cfg.model_dir), horizon=15)
    return cfg, frame


def test_batch_inference_equals_the_live_predictors(market):
    """Features, p_up, expected return and volatility of predict_frame + VolatilityFeed equal
    the live path (IncrementalFeatures, single-row LightGBM, VolatilityTrack) bar by bar,
    across a long gap."""
    cfg, frame = market
    loaded = ModelRegistry(cfg.model_dir).load()
    ms = loaded.model_set
    er, p_up, complete = predict_frame(ms, frame, M, 5)
    feed = VolatilityFeed(VolatilityTrack(ms.garch, 500), M, 5)
    inc = IncrementalFeatures(M, 5)
    live_track = VolatilityTrack(ms.garch, 500)
    prev = None
    for i, row in enumerate(frame.iter_rows()):
        bar = Bar(SYM, *row)
        x = inc.update(bar)
        if inc.last_gap is not None:
            live_track.cut()
        elif prev is not None:
            live_track.fold(math.log(bar.close / prev.close))
        prev = bar
        vol = feed.fold(bar.ts, bar.close)
        assert (x is not None) == bool(complete[i]), i
        assert (vol is None) == (live_track.state is None), i
        if x is not None and vol is not None:
            live = ms.predict(x, live_track.state, model_version="v")
            assert live["p_up"] == p_up[i] and live["volatility"] == vol
            assert live["expected_return"] == pytest.approx(er[i], rel=1e-12, abs=1e-15)


def test_chunked_and_one_shot_runs_are_identical(market):
    cfg, frame = market
    spec = BacktestSpec(SYM, T0 + 1440 * M, T0 + 5000 * M,
                        {"strategy.entry_threshold": "0", "strategy.p_up_margin": "0"})
    whole = run_backtest(cfg, spec)
    small = run_backtest(load_config({"BDT_VAR": str(cfg.var_dir),
                                      "BDT_BACKTEST__CHUNK_BARS": "1000",
                                      "BDT_BACKTEST__MIN_CHUNK_BARS": "100"}), spec)
    assert whole.run["chunks"] == 1 and small.run["chunks"] >= 3
    assert whole.trades and [t.to_dict() for t in whole.trades] == \
        [t.to_dict() for t in small.trades]
    for key in ("final_equity", "max_drawdown", "exposure", "trades", "fees_paid", "actions"):
        assert whole.metrics[key] == small.metrics[key], key
    assert whole.metrics["decided_without_prediction"] == 60     # the gap's warm-up, only
    # every day's close, not the thinned chart's last point of the day (the walk-forward
    # chains these)
    assert len(whole.chart) < 3560 and whole.daily == small.daily
    assert [d for d, _ in whole.daily] == [T0 + k * 1440 * M for k in range(1, 4)]
    assert whole.daily[-1][1] == whole.metrics["final_equity"]


def test_a_grid_runs_every_combination_and_a_bad_one_is_one_line(market):
    """`bdt backtest --grid`: each combination a report and a trial; nothing stored for the
    symbol is said in one line (it was a traceback)."""
    cfg, _ = market
    env = child_env(cfg.var_dir, BDT_MODEL__MIN_TRAIN_BARS="500")
    bdt = ["bdt", "backtest", "--from", str(T0 + 1440 * M),
           "--to", str(T0 + 2000 * M), "--grid", "strategy.entry_threshold=0,0.5"]
    trials = cfg.reports_dir / "trials.jsonl"
    before = trials.read_text().count("\n") if trials.exists() else 0
    done = subprocess.run([*bdt, "--json"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["settings"]["strategy.entry_threshold"] for r in rows] == ["0", "0.5"]
    assert rows[0]["trades"] > 0 and rows[1]["trades"] == 0     # 0.5 = 50 % a bar: never
    assert trials.read_text().count("\n") == before + 2
    for argv in (bdt, bdt[:2] + bdt[6:]):                 # a range given, the default range
        done = subprocess.run([*argv, "--symbol", "NONE/USDT"], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 1
        assert done.stderr.startswith("bdt backtest --grid: no NONE/USDT bars stored")
        assert done.stderr.count("\n") == 1, done.stderr
    assert trials.read_text().count("\n") == before + 2


def test_a_report_is_written_and_listed(market):
    cfg, _ = market
    start, end = default_range(cfg, SYM)
    assert end % 86_400_000 == 0 and end - start == 86_400_000
    doc, folder = run_and_report(cfg, BacktestSpec(SYM, start, end))
    saved = json.loads((folder / "report.json").read_text())
    assert saved["id"] == doc["id"] and saved["metrics"]["bars"] > 1000
    page = (folder / "report.html").read_text()
    assert "<svg" in page and "Monthly returns" in page and "<script" not in page
    out = subprocess.run(["bdt", "reports", "list", "--json"], capture_output=True, text=True,
                         env=child_env(cfg.var_dir), timeout=60)
    assert doc["id"] in [r["id"] for r in json.loads(out.stdout)]


def test_a_long_range_under_a_small_cap_finishes_by_shrinking_chunks(tmp_path):
    """1M bars of sma_cross in a test slice capped at 256 MiB: the chunks start at the
    configured 1,000,000 bars and shrink to what fits; the run ends with a report, not an
    OOM kill."""
    tree = unique_tree()
    backend, reason = writable_backend(tree)
    if backend is None:
        pytest.skip(f"cgroups not writable here: {reason}")
    try:
        var = tmp_path / "var"
        cfg = load_config({"BDT_VAR": str(var)})
        frame = SyntheticMarket(SYM, M, 5, start_ts=T0).frame(1_000_000)
        store = open_store(cfg)
        store.insert_frame(SYM, frame)
        store.compact(SYM, 0)
        store.close()
        del frame
        table = tmp_path / "alloc.toml"
        table.write_text('[parent]\nname = "bitdaytrader"\nmemory_max = "1G"\n\n'
                         '[slices.batch]\nmemory_max = "256M"\nswap = "0"\n'
                         'programs = ["backtest"]\n')
        env = child_env(var, BDT_CGROUPS__TREE=tree, BDT_CGROUPS__ALLOCATION=str(table),
                        BDT_BACKTEST__CHUNK_BARS="1000000", BDT_BACKTEST__MIN_CHUNK_BARS="5000")
        out = subprocess.run(["bdt", "cgexec", "batch", "--", "bdt", "backtest", "--strategy",
                              "sma_cross", "--from", str(T0), "--to", str(T0 + 10**6 * M),
                              "--json"], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        run = json.loads(out.stdout)["run"]
        assert run["cap_bytes"] == 256 << 20
        assert max(run["chunk_sizes"]) < 1_000_000 and run["chunks"] > 1
        assert backend.stats("batch").oom_kills == 0
        assert run["peak_bytes"] <= 256 << 20
        print("chunks", run["chunks"], run["chunk_sizes"][:5], "peak MiB", run["peak_bytes"] >> 20)
    finally:
        remove_tree(tree)


class Left:
    """A slice with ``left`` bytes left under a 150 MiB cap."""

    def __init__(self, left: int) -> None:
        self.left_bytes = left

    def left(self) -> int:
        return self.left_bytes

    def limit(self) -> int:
        return 150 << 20


def test_memory_exhausted_names_what_it_tried():
    from shared.backtest.memory import ChunkSizer, MemoryExhausted

    sizer = ChunkSizer(Left(1 << 20), 100_000, 5000, 1000.0, 0.5)
    with pytest.raises(MemoryExhausted, match="1 MiB left under the cap \\(150 MiB\\) is too "
                                              "little for a chunk of 5000 bars"):
        sizer.next()


def test_low_resource_mode_halves_the_chunk_and_the_report_says_so():
    from shared.backtest.memory import ChunkSizer

    sizer = ChunkSizer(Left(40_000_000), 100_000, 5000, 1000.0, 0.5)    # 20,000 bars' worth
    assert [sizer.next(), sizer.next(halve=True)] == [20_000, 10_000]
    assert sizer.sizes == [20_000, 10_000]
    sizer.memory = Left(12_000_000)                                      # 6,000 bars' worth
    assert sizer.next(halve=True) == 5000                                # not below the floor
