"""``python -m bench backtest``: the backtest engine's speed and memory (issue 13).

1. 1M one-minute synthetic bars through the ``ml`` strategy with inference, run as the batch
   program runs — ``bdt cgexec batch -- bdt backtest`` in a cgroup tree of its own with the real
   allocation table's batch slice (1.5 GiB cap, 0.5-core quota, cpu.idle) — beside the same run
   unconfined. Targets: ≤ 20 s and ≤ 600 MB peak.
2. ``sma_cross`` against backtesting.py (PyPI) on the same bars, same rules (SMA 10/30
   crossover, long only, 1 unit, market orders at the signal bar's close, 0.04 % commission, no
   spread or slippage), in this process one after the other: bars/s of each, the ratio (target
   ≥ 10×) and whether every trade is identical (entry and exit bar, prices, P&L).
3. Peak memory as the range grows: ``sma_cross`` over 100k, 1M and 5M bars (``--quick``: 100k,
   300k), each in the batch slice.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common
from shared.resources.allocation import load_allocation
from shared.resources.cgroup import NullBackend
from shared.resources.cgroup_open import open_backend

M = 60_000
T0 = 1_600_041_600_000                    # a UTC midnight
SYM = "BTC/USDT"
FEE = 0.0004


def _grower(var: Path):
    """A function that grows the store of ``var`` to ``n`` bars of one seeded market."""
    from shared.config import load_config
    from shared.market.synthetic import SyntheticMarket
    from shared.storage.bar_store import open_store

    cfg = load_config({"BDT_VAR": str(var)})
    market = SyntheticMarket(SYM, M, 7, start_ts=T0)
    have = [0]

    def grow(n: int) -> None:
        store = open_store(cfg)
        try:
            while have[0] < n:
                frame = market.frame(min(200_000, n - have[0]))
                store.insert_frame(SYM, frame)
                have[0] += frame.height
                store.compact(SYM, 0)
        finally:
            store.close()
    return grow


def _make_store(var: Path, n: int, *, model: bool) -> None:
    """``n`` synthetic bars stored (compacted to Parquet) and, with ``model``, a model set
    trained on the first 20,000."""
    from shared.config import load_config
    from shared.market.synthetic import SyntheticMarket
    from shared.storage.bar_store import open_store

    cfg = load_config({"BDT_VAR": str(var)})
    market = SyntheticMarket(SYM, M, 7, start_ts=T0)
    store = open_store(cfg)
    try:
        done = 0
        while done < n:
            frame = market.frame(min(200_000, n - done))
            store.insert_frame(SYM, frame)
            if model and done == 0:
                from shared.models.fitting import train_and_register
                from shared.models.registry import ModelRegistry

                train_and_register(frame.head(20_000), ModelRegistry(cfg.model_dir),
                                   horizon=cfg.get("model.horizon_bars"))
            done += frame.height
            store.compact(SYM, 0)
    finally:
        store.close()


def _backtest(var: Path, n: int, strategy: str, tree: str | None) -> dict[str, Any]:
    """One ``bdt backtest`` over the first ``n`` bars; in the batch slice of ``tree``."""
    cmd = ["bdt", "backtest", "--strategy", strategy, "--from", str(T0), "--to",
           str(T0 + n * M), "--json"]
    bin_dir = str(Path(sys.executable).parent)      # the venv's bdt, with or without make
    env = common.bdt_env(var, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
                         **({"BDT_CGROUPS__TREE": tree} if tree else {}))
    if tree:
        cmd = ["bdt", "cgexec", "batch", "--", *cmd]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=common.REPO,
                         timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-1500:]}")
    doc = json.loads(out.stdout)
    return {"wall_s": round(time.perf_counter() - started, 2), **doc["run"],
            "trades": doc["metrics"]["trades"]}


def _versus_backtesting_py(var: Path, n: int) -> dict[str, Any]:
    import warnings

    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    from shared.backtest.runner import BacktestSpec, run_backtest
    from shared.config import load_config
    from shared.storage.bar_store import open_store

    cfg = load_config({"BDT_VAR": str(var)})
    overrides = {"strategy.name": "sma_cross", "strategy.sma_fast": "10",
                 "strategy.sma_slow": "30", "strategy.sma_size": "1",
                 "strategy.sma_size_mode": "qty", "paper.fee_taker": str(FEE),
                 "paper.spread": "0", "paper.slippage": "0", "paper.starting_cash": "1e9",
                 "risk.max_notional": "1e12", "risk.max_position_qty": "10",
                 "risk.daily_loss_limit": "1e12", "risk.max_drawdown": "0.99",
                 # backtesting.py has no cooldown after a losing streak: none here either
                 "risk.losses_before_cooldown": "1000000000"}
    started = time.perf_counter()
    ours = run_backtest(cfg, BacktestSpec(SYM, T0, T0 + n * M, overrides))
    ours_s = time.perf_counter() - started

    store = open_store(cfg)
    bars = store.collect(SYM, T0, T0 + n * M)
    store.close()
    df = pd.DataFrame({"Open": bars["open"], "High": bars["high"], "Low": bars["low"],
                       "Close": bars["close"], "Volume": bars["volume"]},
                      index=pd.to_datetime(bars["ts"].to_numpy(), unit="ms"))

    def sma(values, length):
        return pd.Series(values).rolling(length).mean()

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 30)

        def next(self) -> None:
            if crossover(self.fast, self.slow) and not self.position:
                self.buy(size=1)
            elif crossover(self.slow, self.fast) and self.position:
                self.position.close()

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, SmaCross, cash=1e9, commission=FEE, trade_on_close=True,
                         finalize_trades=False).run()
    theirs_s = time.perf_counter() - started
    theirs = stats["_trades"]
    mine = [(t.entry_ts, t.exit_ts, round(t.entry_price, 8), round(t.exit_price, 8),
             round(t.pnl, 6)) for t in ours.trades]
    other = [(int(r.EntryTime.value // 1_000_000), int(r.ExitTime.value // 1_000_000),
              round(r.EntryPrice, 8), round(r.ExitPrice, 8), round(r.PnL, 6))
             for r in theirs.itertuples()]
    same = mine == other
    first_diff = next((i for i, (a, b) in enumerate(zip(mine, other, strict=False)) if a != b),
                      None)
    return {"bars": n, "ours_s": round(ours_s, 2), "backtesting_py_s": round(theirs_s, 2),
            "ours_bars_per_s": round(n / ours_s), "backtesting_py_bars_per_s": round(n / theirs_s),
            "ratio": round(theirs_s / ours_s, 1), "trades": len(mine),
            "backtesting_py_trades": len(other), "identical_trades": same,
            "first_difference": None if first_diff is None else
            {"ours": mine[first_diff], "backtesting_py": other[first_diff]}}


def _remove(backend: Any, in_slice: bool) -> None:
    """Remove the bench's cgroup tree (its slices empty by now)."""
    deadline = time.monotonic() + 5
    while in_slice and not backend.remove_tree() and time.monotonic() < deadline:
        time.sleep(0.1)


def bench(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": common.metadata(quick)}
    tree = f"bdt-bench-{secrets.token_hex(4)}"
    backend = open_backend(tree)
    in_slice = not isinstance(backend, NullBackend)
    if in_slice:
        backend.apply_parent(load_allocation().parent)
    else:
        print(f"  no writable cgroups ({backend.reason}): runs are unconfined")
    big = 300_000 if quick else 1_000_000
    try:
        with common.var_dir() as var:
            _make_store(var, big, model=True)
            confined = _backtest(var, big, "ml", tree if in_slice else None)
            free = _backtest(var, big, "ml", None)
            results["ml"] = {"bars": big, "batch_slice": confined, "unconfined": free}
            common.print_table(
                f"{big:,} bars, ml strategy with inference",
                ["run", "wall s", "bars/s", "peak MiB", "cap MiB", "chunks", "trades"],
                [[name, r["wall_s"], r["bars_per_s"], r["peak_bytes"] / 2**20,
                  (r["cap_bytes"] or 0) / 2**20, r["chunks"], r["trades"]]
                 for name, r in (("batch slice (0.5 core)", confined), ("unconfined", free))])
            common.verdict(confined["wall_s"] <= 20 and confined["peak_bytes"] <= 600e6,
                           f"≤ 20 s and ≤ 600 MB in the batch slice: {confined['wall_s']} s, "
                           f"{confined['peak_bytes'] / 1e6:.0f} MB")
            versus = _versus_backtesting_py(var, 100_000 if quick else 300_000)
            results["sma_cross_vs_backtesting_py"] = versus
            common.print_table(
                f"sma_cross 10/30 vs backtesting.py, {versus['bars']:,} bars, same rules",
                ["engine", "s", "bars/s", "trades"],
                [["bitdaytrader", versus["ours_s"], versus["ours_bars_per_s"], versus["trades"]],
                 ["backtesting.py", versus["backtesting_py_s"],
                  versus["backtesting_py_bars_per_s"], versus["backtesting_py_trades"]]])
            common.verdict(versus["ratio"] >= 10 and versus["identical_trades"],
                           f"≥ 10× its bars/s with identical trades: {versus['ratio']}×, "
                           f"trades identical: {versus['identical_trades']}")
        sizes = (100_000, 300_000) if quick else (100_000, 1_000_000, 5_000_000)
        rows, flat = [], {}
        with common.var_dir() as var:
            grow = _grower(var)
            for n in sizes:
                grow(n)
                r = _backtest(var, n, "sma_cross", tree if in_slice else None)
                flat[n] = r
                rows.append([f"{n:,}", r["wall_s"], r["peak_bytes"] / 2**20, r["chunks"]])
        results["memory_by_range"] = flat
        common.print_table("sma_cross peak memory as the range grows (batch slice)",
                           ["bars", "wall s", "peak MiB", "chunks"], rows)
        # a range shorter than one chunk peaks lower; beyond one chunk the peak must stay put
        peaks = [r["peak_bytes"] for n, r in flat.items() if n >= sizes[1]]
        by_size = ", ".join(f"{n:,} bars {r['peak_bytes'] / 2**20:.0f} MiB"
                            for n, r in flat.items())
        common.verdict(max(peaks) <= 1.1 * min(peaks), f"flat beyond one chunk: {by_size}")
    finally:
        _remove(backend, in_slice)
    return results


def bench_walkforward(quick: bool) -> dict[str, Any]:
    """One year of one-minute bars tested out of sample in weekly folds, each retrained on the
    4 weeks before it (so the store holds the year plus those 4 weeks), in the batch slice (its
    0.5-core quota included), then the same folds on a Dask LocalCluster of 2 workers.
    Target: ≤ 5 min and ≤ 1.2 GB peak in the slice."""
    results: dict[str, Any] = {"meta": common.metadata(quick)}
    folds = 8 if quick else 52
    bars = (folds * 7 + 28 + 2) * 1440       # + the purge/embargo and the last, partial day
    tree = f"bdt-bench-{secrets.token_hex(4)}"
    backend = open_backend(tree)
    in_slice = not isinstance(backend, NullBackend)
    if in_slice:
        backend.apply_parent(load_allocation().parent)
    sets = ["--set", f"walkforward.folds={folds}", "--set", "walkforward.train_days=28",
            "--set", "walkforward.test_days=7", "--json"]
    bin_dir = str(Path(sys.executable).parent)
    try:
        with common.var_dir() as var:
            _grower(var)(bars)
            env = common.bdt_env(var, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
                                 **({"BDT_CGROUPS__TREE": tree} if in_slice else {}))
            runs = {}
            for name, cmd, extra in (
                    ("batch slice, in-process", ["bdt", "cgexec", "batch", "--", "bdt",
                                                 "walkforward", *sets], {}),
                    ("Dask LocalCluster, 2 workers", ["bdt", "walkforward", *sets],
                     {"dask": True})):
                cluster = None
                run_env = dict(env)
                if extra.get("dask"):
                    from distributed import LocalCluster

                    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
                    run_env["BDT_BATCH__DASK_SCHEDULER"] = cluster.scheduler_address
                try:
                    started = time.perf_counter()
                    out = subprocess.run(cmd, capture_output=True, text=True, env=run_env,
                                         cwd=common.REPO, timeout=7200)
                    wall = time.perf_counter() - started
                finally:
                    if cluster is not None:
                        cluster.close()
                if out.returncode != 0:
                    raise RuntimeError(f"{name}: {out.stderr[-1500:]}")
                doc = json.loads(out.stdout)
                secs = [f["seconds"] for f in doc["folds"] if f["seconds"]]
                peak = backend.stats("batch").memory_peak if in_slice and not extra else None
                runs[name] = {"wall_s": round(wall, 1), "folds": doc["metrics"]["folds"],
                              "failed": doc["metrics"]["failed"],
                              "train_s": round(sum(s["train"] for s in secs), 1),
                              "backtest_s": round(sum(s["backtest"] for s in secs), 1),
                              "peak_bytes": peak, "oos_total_return":
                                  doc["metrics"]["oos_total_return"]}
            results["runs"] = runs
        common.print_table(f"walk-forward, {folds} weekly folds, {bars:,} bars",
                           ["run", "wall s", "train s", "backtest s", "peak MiB", "failed"],
                           [[n, r["wall_s"], r["train_s"], r["backtest_s"],
                             (r["peak_bytes"] or 0) / 2**20, r["failed"]]
                            for n, r in runs.items()])
        first = runs["batch slice, in-process"]
        common.verdict(first["wall_s"] <= 300 and (first["peak_bytes"] or 0) <= 1.2e9,
                       f"≤ 5 min and ≤ 1.2 GB in the batch slice: {first['wall_s']} s, "
                       f"{(first['peak_bytes'] or 0) / 1e6:.0f} MB")
        same = len({r["oos_total_return"] for r in runs.values()}) == 1
        print(f"  same out-of-sample result in-process and on Dask: {same}")
        results["same_result"] = same
    finally:
        _remove(backend, in_slice)
    return results
