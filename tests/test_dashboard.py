"""The dashboard: every page run by Streamlit's AppTest against a var directory written by the
project's own writers (TradingDB, JobRuns, the backtest's reports, the monitor's database and
cache snapshot, the model registry), read-only; the refusal to start under 600 MiB; the
launcher's settings; ``bdt dashboard``'s verbs."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from services.dashboard import __main__ as launcher
from services.dashboard import data
from services.dashboard.headroom import MIB, Headroom, read_headroom
from services.monitor.sampler import ProgramSample, Sample, SliceSample
from services.monitor.snapshot import Snapshot
from services.monitor.store import MonitorDB
from shared.backtest.jobs import run_and_report
from shared.backtest.report import new_run_id, write_report
from shared.backtest.runner import BacktestSpec
from shared.bus.client import wait_for
from shared.config import Config, load_config
from shared.jobs.runs import JobRuns
from shared.market.synthetic import SyntheticMarket
from shared.models.fitting import train_model_set
from shared.models.registry import ModelRegistry
from shared.resources import cgexec
from shared.storage.bar_store import open_store
from shared.storage.trading_state import TradingDB
from shared.trading.risk import RiskState
from shared.trading.types import Fill, OrderRequest, Position
from tests.helpers import REPO, child_env, start_module, stop_process

APP = REPO / "services" / "dashboard" / "app.py"
PAGES = ("pages/live.py", "pages/resources.py", "pages/jobs.py", "pages/backtests.py",
         "pages/models.py")
SYM, M, H = "BTC/USDT", 60_000, 3_600_000
BARS = 240
FILLS = [  # (bar index, side, qty, realized P&L before the fee)
    (20, "buy", 0.1, 0.0), (60, "sell", 0.1, 12.5), (100, "sell", 0.1, 0.0),
    (150, "buy", 0.2, -4.0)]
START_EQUITY = 10_000.0


# --- the fixture: a var directory as the stack would leave it ---------------------------------
def write_trading(cfg: Config, end_ts: int) -> dict[str, Any]:
    """BARS decided bars up to ``end_ts`` with four fills (entry, exit, entry short, flip)."""
    db = TradingDB(cfg.var_dir / "data" / "trading.db")
    closes = [40_000 + 300 * math.sin(i / 25) for i in range(BARS)]
    start = end_ts - (BARS - 1) * M
    fills = {i: (side, qty, pnl) for i, side, qty, pnl in FILLS}
    equity = START_EQUITY
    try:
        for i, close in enumerate(closes):
            ts = start + i * M
            with db.transaction(money=i in fills) as conn:
                if i in fills:
                    side, qty, pnl = fills[i]
                    order = OrderRequest(f"bar{ts}", SYM, side, qty, reason=f"rule {i}")
                    db.insert_order(order, ts, "filled", conn)
                    fee = qty * close * 0.001
                    db.record_fill(conn, Fill(order.client_id, SYM, side, qty, close, fee, ts),
                                   pnl - fee)
                    equity += pnl - fee
                db.record_decision(conn, SYM, ts, close, None,
                                   "buy" if i in fills else "hold", 0.0, f"reason {i}")
                db.record_equity(conn, ts, equity, equity - 0.1 * close, 0.1 * close)
        with db.transaction() as conn:
            db.save_position(conn, Position(SYM, 0.1, closes[150], start + 150 * M, 8.0))
            db.put("cash", equity - 0.1 * closes[-1], conn)
            db.save_bar(conn, closes[-1], end_ts, None,
                        RiskState(day="2026-01-01", day_start_equity=START_EQUITY,
                                  peak_equity=equity, mode="low_resource"))
    finally:
        db.close()
    return {"last_close": closes[-1], "today_pnl": equity - START_EQUITY}


def write_monitor(cfg: Config, now_ms: int) -> dict[str, Any]:
    """Three hours of history (a row a minute) for the tree, every slice and two programs; an
    OOM kill in batch, two predictor restarts, three alerts and a mode change."""
    table = cgexec.load_table(cfg)
    db = MonitorDB(cfg.var_dir / "data" / "monitor.db", 7, 90)
    rows = []
    for step in range(180):
        ts = now_ms - (180 - step) * M
        for sl in (table.parent, *table.slices.values()):
            kind = "tree" if sl is table.parent else "slice"
            used = int(sl.memory_max * (0.2 + 0.1 * math.sin(step / 20)))
            oom = 1 if sl.name == "batch" and step > 120 else 0
            rows.append((ts, sl.name, kind, used, used, 1 << 20, used, sl.memory_max, oom,
                         0.1, 0.2, 0, None, None, None, None))
        for name, restarts in (("predictor", step // 70), ("bot", 0)):
            rows.append((ts, name, "program", 80 * MIB, 80 * MIB, None, None, None, None, 0.05,
                         0.1, None, None, None, restarts, "RUNNING"))
    db.add_history(rows)
    alerts = [("restart", "warning", "predictor", "predictor: restarted before its slice's cap"),
              ("oom_kill", "critical", "batch", "batch: 1 OOM kill"),
              ("mode", "warning", "bitdaytrader", "mode normal → low_resource")]
    for i, (kind, severity, subject, message) in enumerate(alerts):
        db.add_alert(now_ms - (60 - i) * M, kind, severity, subject, message, {"n": i}, True)
    db.add_mode(now_ms - 58 * M, "low_resource", "normal", "memory ≥ 2.5 GiB for 2 samples",
                2700 * MIB, 35.0)
    db.close()
    return {"alerts": [a[3] for a in alerts]}


def write_snapshot(cfg: Config) -> None:
    """The monitor's cache keys, written by the monitor's own Snapshot."""
    table = cgexec.load_table(cfg)

    def sl(name: str, cap: int, used: int) -> SliceSample:
        return SliceSample(name, (), "cgroup", cap, used, 1 << 20, used, 0, 1.0, 0.05, None, 0,
                           0.0)

    slices = {name: sl(name, s.memory_max, s.memory_max // 4) for name, s in table.slices.items()}
    programs = {"bot": ProgramSample("bot", "bot", "RUNNING", 4242, 3600.0, 90 * MIB, 1.0, 0.05,
                                     True, 0, None, None)}
    sample = Sample(time.time(), 5.0, True, "v1", "",
                    sl(table.parent.name, table.parent.memory_max, 900 * MIB), slices, programs,
                    {}, None)
    snap = Snapshot(cfg, ttl_s=600, timeout_ms=3000)
    try:
        assert snap.write(sample, {"mode": "low_resource", "since": time.time() - 3480,
                                   "reason": "memory ≥ 2.5 GiB for 2 samples",
                                   "memory_bytes": 900 * MIB, "cpu_pct": 12.0}, [])
    finally:
        snap.close()


def write_jobs(cfg: Config, report_id: str) -> None:
    runs = JobRuns(cfg.var_dir / "data" / "jobs.db")
    now = time.time()
    try:
        outcomes = [("backtest", "ok", 0, 412.0, 380 * MIB, report_id, None),
                    ("walkforward", "oom_killed", -9, 95.0, 1536 * MIB, None,
                     "killed by the kernel at the batch slice's cap"),
                    ("backtest", "timed_out", None, 3600.0, 700 * MIB, None,
                     "over the job's 60 min limit")]
        for i, (job, state, code, took, peak, report, reason) in enumerate(outcomes):
            run = runs.add(job, f"2026-01-0{i + 1}T03:00:00+09:00", "scheduled")
            assert run is not None
            runs.update(run.id, state=state, started_at=now - 86_400 * (3 - i),
                        ended_at=now - 86_400 * (3 - i) + took, duration_s=took,
                        exit_status=code, peak_bytes=peak, cap_bytes=1536 * MIB,
                        oom_kills=1 if state == "oom_killed" else 0, report=report,
                        reason=reason)
        runs.add("backtest", "2026-01-04T03:00:00+09:00", "catch_up", "skipped",
                 "missed past the grace")
    finally:
        runs.close()


def write_reports(cfg: Config) -> dict[str, str]:
    """Two sma_cross backtests (different speeds) over three synthetic days, and a walk-forward
    report with folds and the gate's record (the walk-forward schema)."""
    t0 = 1_700_006_400_000
    frame = SyntheticMarket(SYM, M, 21, start_ts=t0).frame(3 * 1440)
    store = open_store(cfg)
    store.insert_frame(SYM, frame)
    store.close()
    ids = {}
    for name, fast, slow in (("fast", "5", "20"), ("slow", "20", "60")):
        doc, _ = run_and_report(cfg, BacktestSpec(SYM, t0, t0 + 3 * 1440 * M, {
            "strategy.name": "sma_cross", "strategy.sma_fast": fast, "strategy.sma_slow": slow}))
        ids[name] = doc["id"]
    wf = {**doc, "id": new_run_id("walkforward", "sma_cross"), "kind": "walkforward",
          # the shape shared.backtest.walkforward.fold_rows writes
          "folds": [{"index": i, "train_start": t0 - 7 * 1440 * M, "train_end": t0 - 30 * M,
                     "test_start": t0 + i * 1440 * M, "test_end": t0 + (i + 1) * 1440 * M,
                     "oos": {"total_return": r, "trades": 4 + i},
                     "is": {"total_return": 0.01, "trades": 6}, "wfe": r / 0.01,
                     "trades": 4 + i, "error": None, "seconds": {}}
                    for i, r in enumerate((0.012, -0.004, 0.007))],
          "gate": {"promote": False, "reasons": ["3 trades < 10 needed to judge"],
                   "promoted": False}}
    write_report(wf, cfg.reports_dir)
    ids["walkforward"] = wf["id"]
    return ids


def write_models(cfg: Config) -> dict[str, str]:
    """One model set registered twice: the first promoted by the gate, the second rejected."""
    frame = SyntheticMarket(SYM, M, 5, start_ts=1_700_006_400_000).frame(1440)
    model_set, report = train_model_set(frame, horizon=15)
    registry = ModelRegistry(cfg.model_dir)
    # the gate's record, as shared.models.promotion.challenge writes it
    first = registry.register(model_set, {**report, "gate": {
        "promote": True, "reasons": ["beats the champion on every rule"],
        "challenger": {"total_return": 0.02, "trades": 30}, "champion": None,
        "dsr": {"dsr": 0.97, "trials": 12}, "rules": {"min_dsr": 0.95}}})
    registry.promote(first)
    time.sleep(1.1)                          # versions are named by the second
    second = registry.register(model_set, {**report, "gate": {
        "promote": False, "reasons": ["deflated Sharpe ratio 0.700 < 0.950 (12 trials)"],
        "challenger": {"total_return": 0.01, "trades": 30},
        "champion": {"total_return": 0.02, "trades": 30},
        "dsr": {"dsr": 0.7, "trials": 12}, "rules": {"min_dsr": 0.95}}})
    return {"promoted": first, "rejected": second}


def build_var(cfg: Config) -> dict[str, Any]:
    """Everything the dashboard reads, but the cache snapshot (it needs the cache running)."""
    now = int(time.time() * 1000)
    facts = write_trading(cfg, now - now % M)
    facts |= write_monitor(cfg, now)
    facts["reports"] = write_reports(cfg)
    write_jobs(cfg, facts["reports"]["fast"])
    facts["models"] = write_models(cfg)
    return facts


def digests(var_dir: Path) -> dict[str, str]:
    """Every file of the var directory but SQLite's -wal/-shm (a read-only reader may leave
    empty ones beside a closed database), with its sha256."""
    return {str(p.relative_to(var_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(var_dir.rglob("*")) if p.is_file()
            and not p.name.endswith(("-wal", "-shm")) and "run" not in p.parts
            and p.suffix != ".log"}


@pytest.fixture(scope="module")
def stack_var(tmp_path_factory):
    """The fixture var directory, the cache service running with the monitor's snapshot in it,
    and BDT_VAR pointing there for the in-process app."""
    var = tmp_path_factory.mktemp("dash") / "var"
    (var / "run").mkdir(parents=True, mode=0o700)
    cfg = load_config({"BDT_VAR": str(var)})
    facts = build_var(cfg)
    cache = start_module("services.cache", var)
    try:
        wait_for("cache", cfg, timeout_s=15)
        write_snapshot(cfg)
        mp = pytest.MonkeyPatch()
        mp.setenv("BDT_VAR", str(var))
        yield cfg, facts
        mp.undo()
    finally:
        stop_process(cache)


def run_page(page: str) -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list[Any]:
    return list(at.get("vega_lite_chart"))


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "subheader")
                     for e in at.get(kind))


# --- the pages ----------------------------------------------------------------------------
def test_live_page_shows_price_fills_position_equity_and_pnl(stack_var):
    _, facts = stack_var
    at = run_page(PAGES[0])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["last close"] == f"{facts['last_close']:,.2f}"
    assert metrics["today's P&L"] == f"{facts['today_pnl']:+,.2f}"
    assert next(k for k in metrics if k.startswith("position")).startswith("position, long @")
    assert metrics[next(k for k in metrics if k.startswith("position"))] == "+0.1"
    assert len(charts(at)) == 2                            # price with fills, equity
    fills = at.dataframe[0].value
    assert list(fills["kind"]) == ["flip", "entry", "exit", "entry"]    # newest first
    assert "resource mode **low_resource**" in texts(at) and "paper" in texts(at)


def test_resources_page_shows_slices_against_caps_ooms_restarts_alerts(stack_var):
    cfg, facts = stack_var
    at = run_page(PAGES[1])
    table = cgexec.load_table(cfg)
    now = at.dataframe[0].value
    assert list(now["slice"]) == [table.parent.name, *table.slices]
    assert list(now["cap"]) == [f"{s.memory_max / MIB:,.0f} MiB"
                                for s in (table.parent, *table.slices.values())]
    assert len(charts(at)) == 2                            # memory and CPU, faceted by slice
    frames = [d.value for d in at.dataframe]
    kills = next(f for f in frames if "OOM kills (counter)" in f.columns)
    assert dict(zip(kills["slice"], kills["OOM kills (counter)"], strict=True))["batch"] == 1
    restarts = next(f for f in frames if "restarts in window" in f.columns)
    assert dict(zip(restarts["program"], restarts["restarts in window"],
                    strict=True)) == {"bot": 0, "predictor": 2}
    listed = next(f for f in frames if "message" in f.columns)
    assert set(listed["message"]) == set(facts["alerts"])
    assert "mode **low_resource**" in texts(at)


def test_jobs_page_shows_outcomes_durations_and_peaks_against_the_cap(stack_var):
    at = run_page(PAGES[2])
    runs = at.dataframe[-1].value
    assert list(runs["outcome"]) == ["skipped", "timed_out", "oom_killed", "ok"]
    assert list(runs["peak % of cap"])[1:] == [pytest.approx(45.6, abs=0.1), 100.0,
                                               pytest.approx(24.7, abs=0.1)]
    assert len(charts(at)) == 2                            # peak vs cap, durations


def test_backtests_page_shows_reports_side_by_side_and_folds(stack_var):
    _, facts = stack_var
    ids = facts["reports"]
    at = run_page(PAGES[3])
    listed = at.dataframe[0].value
    assert set(listed["id"]) == set(ids.values())
    assert at.selectbox[0].value == ids["walkforward"]      # the newest first
    second = at.selectbox[1].value
    assert second in (ids["fast"], ids["slow"])
    # two runs: equity and drawdown each, and the walk-forward's fold chart
    assert len(charts(at)) == 5
    metrics = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert list(metrics.columns) == ["metric", ids["walkforward"], second]
    assert {"total_return", "max_drawdown", "sharpe", "trades"} <= set(metrics["metric"])
    shown = dict(zip(metrics["metric"], metrics[second], strict=True))
    assert shown["total_return"].endswith(" %") and shown["max_drawdown"].endswith(" %")
    assert not shown["max_drawdown_duration_days"].endswith("%")      # days, not a fraction
    at.selectbox[0].set_value(ids["fast"]).run()
    at.selectbox[1].set_value(ids["slow"]).run()
    assert not at.exception
    metrics = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    assert list(metrics.columns) == ["metric", ids["fast"], ids["slow"]]
    assert len(charts(at)) == 4                            # no folds in plain backtests
    at.radio[0].set_value("walkforward").run()
    assert list(at.dataframe[0].value["id"]) == [ids["walkforward"]]


def test_models_page_shows_versions_and_promotion_decisions(stack_var):
    _, facts = stack_var
    at = run_page(PAGES[4])
    versions = at.dataframe[0].value
    assert list(versions["version"]) == [facts["models"]["rejected"],
                                         facts["models"]["promoted"]]
    assert list(versions["promoted"]) == [False, True]
    assert list(versions["gate"]) == ["reject", "promote"]
    assert versions["lgbm AUC"].notna().all()
    assert "promoted: **" + facts["models"]["promoted"] in texts(at)
    assert any("0.700 < 0.950" in str(j.value) for j in at.json)


def test_no_page_changes_a_file(stack_var):
    cfg, _ = stack_var
    before = digests(cfg.var_dir)
    assert len(before) > 10
    for page in PAGES:
        run_page(page)
    assert digests(cfg.var_dir) == before


def test_pages_on_an_empty_var_directory_say_what_is_missing(tmp_path, monkeypatch):
    """A stack that never ran: no database, no report, no model, no cache — every page says
    so and nothing is created."""
    var = tmp_path / "var"
    (var / "run").mkdir(parents=True)
    monkeypatch.setenv("BDT_VAR", str(var))
    for page in PAGES:
        at = run_page(page)
        assert at.info, page
    assert [p for p in var.rglob("*") if p.is_file()] == []


# --- the readers ----------------------------------------------------------------------------
def test_fills_are_classified_by_walking_back_from_the_position():
    fills = [{"side": s, "qty": q} for s, q in
             (("buy", 1.0), ("buy", 1.0), ("sell", 2.0), ("sell", 1.0), ("buy", 3.0))]
    assert [f["kind"] for f in data.classify_fills(fills, 2.0)] == \
        ["entry", "entry", "exit", "entry", "flip"]


# --- the launcher ---------------------------------------------------------------------------
def reading(machine_mib: int, tree_mib: int) -> Headroom:
    return Headroom(machine_mib * MIB, tree_mib * MIB, 4096 * MIB, "injected")


@pytest.mark.parametrize(("machine", "tree"), [(599, 3000), (8000, 599), (100, 200)])
def test_it_refuses_to_start_under_600_mib_saying_how_much_there_is(machine, tree, caplog,
                                                                   monkeypatch, tmp_path):
    monkeypatch.setenv("BDT_VAR", str(tmp_path))
    execs = []
    monkeypatch.setattr(launcher.os, "execv", lambda *a: execs.append(a))
    assert launcher.main([], read=lambda cfg: reading(machine, tree)) == 1
    assert execs == []
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "needs 600 MiB" in line
    assert f"the machine has {machine} MiB available" in line
    assert f"the tree {tree} MiB left under its 4096 MiB cap (injected)" in line


def test_with_600_mib_it_execs_streamlit_on_loopback_with_the_light_settings(monkeypatch,
                                                                           tmp_path):
    monkeypatch.setenv("BDT_VAR", str(tmp_path))
    execs = []
    monkeypatch.setattr(launcher.os, "execv", lambda *a: execs.append(a))
    launcher.main(["--port", "8600"], read=lambda cfg: reading(600, 600))
    [(program, argv)] = execs
    assert program == sys.executable and argv[1:4] == ["-m", "streamlit", "run"]
    assert Path(argv[4]) == APP
    flags = dict(a[2:].split("=", 1) for a in argv[5:])
    assert flags["server.address"] == "127.0.0.1" and flags["server.port"] == "8600"
    assert flags["server.headless"] == "true"
    assert flags["server.fileWatcherType"] == "none"
    assert flags["browser.gatherUsageStats"] == "false"
    assert int(flags["server.maxUploadSize"]) <= 1 and int(flags["server.maxMessageSize"]) <= 10
    # every flag is one Streamlit knows
    from streamlit import config as st_config
    assert set(flags) <= set(st_config.get_config_options())


def test_the_real_reading_and_a_real_refusal(tmp_path):
    """The reading of this machine, then the program itself refusing with a need it cannot
    meet: exit 1 and one line with the figures."""
    cfg = load_config({"BDT_VAR": str(tmp_path)})
    now = read_headroom(cfg)
    assert now.machine_bytes > 0 and 0 <= now.tree_bytes <= now.tree_cap_bytes
    out = subprocess.run([sys.executable, "-m", "services.dashboard", "--need-mib", "100000000"],
                         cwd=REPO, env=child_env(tmp_path), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert "refusing to start: the dashboard needs 100000000 MiB" in out.stderr
    assert "MiB available, the tree" in out.stderr


def test_without_cgroups_the_tree_is_supervisords_process_tree(tmp_path):
    """Where cgroups are not enforced the tree's use is the RssAnon of supervisord and its
    descendants, counted as the monitor counts it (shared.resources.processes)."""
    from services.dashboard.headroom import supervised_rss
    from shared.resources.processes import process_figures

    assert supervised_rss(tmp_path)[0] == 0                     # no supervisord.pid
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "supervisord.pid").write_text(f"{os.getpid()}\n")
        used, source = supervised_rss(tmp_path)
        mine = process_figures(os.getpid())[0]
        assert used > 0 and abs(used - mine) < 64 * MIB, (used, mine)
        assert source == ("cgroups not enforced: RssAnon of supervisord's tree "
                          f"(pid {os.getpid()})")
    finally:
        child.kill()
        child.wait()
    (tmp_path / "supervisord.pid").write_text(f"{child.pid}\n")  # gone
    assert supervised_rss(tmp_path) == (0, "cgroups not enforced and no supervisord running: "
                                           "nothing of the tree counted")


def test_text_from_outside_shows_as_written_in_the_dashboards_markdown():
    """Issue 24 item 7, the dashboard side: a report's fields went into st.markdown raw, so
    a crafted label could add a link or an image."""
    from services.dashboard.ui import plain

    shown = plain("[x](http://evil) ![i](u) # h \x1b[31m")
    assert shown == "\\[x\\]\\(http://evil\\) \\!\\[i\\]\\(u\\) # h \\\\x1b\\[31m"
