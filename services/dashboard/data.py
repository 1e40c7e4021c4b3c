"""What the dashboard reads, read-only and bounded, as plain Python (no Streamlit here; the
pages wrap these in ``st.cache_data``): the bot's trading state, the monitor's history and
alerts, the job runs, the reports, the model registry's metadata and the monitor's cache
snapshot — each through its owner's reader (``TradingReader``, ``MonitorReader``,
``JobRunsReader``, ``read_catalogue``, ``list_reports``/``load_report``): no SQL here. Nothing
here loads a model or scans the market store, and no database is opened for writing: SQLite
files are opened read-only, in one read transaction; a file that is not there yet reads as
empty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from services.monitor.store import MonitorReader
from shared.backtest.report import list_reports, load_report
from shared.bus.cache_client import CacheClient
from shared.bus.client import BusError
from shared.config import Config
from shared.jobs.runs import JobRunsReader
from shared.models.registry import read_catalogue
from shared.protocol.cache_keys import MONITOR_ALERTS, MONITOR_MODE, MONITOR_SAMPLE
from shared.resources import cgexec
from shared.storage.sqlite import Reader
from shared.storage.trading_state import TradingReader
from shared.trading.account import day_pnl

HOUR_MS = 3_600_000
MAX_POINTS = 400          # per series on a chart: older history is bucketed to this many
SNAPSHOT_KEYS = (MONITOR_SAMPLE.name, MONITOR_MODE.name, MONITOR_ALERTS.name)
FILL_FIELDS = ("ts", "side", "qty", "price", "fee", "realized_pnl", "reason")   # on the page

R = TypeVar("R", bound=Reader)
T = TypeVar("T")


def data_path(var_dir: Path, name: str) -> Path:
    return var_dir / "data" / name


def read(reader: type[R], path: Path, then: Callable[[R], T], empty: T) -> T:
    """``then`` on the store at ``path`` opened with its owner's ``reader`` (read-only, one
    snapshot); ``empty`` when there is no file (its writer has not run yet)."""
    if not path.is_file():
        return empty
    with reader.open(path) as store:
        return then(store)


# --- the bot's trading state (shared/storage/trading_state.py) --------------------------------
def classify_fills(fills: list[dict[str, Any]], qty_now: float) -> list[dict[str, Any]]:
    """Each fill (oldest first, all of them since some time up to now) marked ``entry``
    (opens or adds), ``exit`` (reduces or closes) or ``flip`` (closes and opens the other
    side), found by walking back from the position held now."""
    qty = qty_now
    for fill in reversed(fills):
        signed = fill["qty"] if fill["side"] == "buy" else -fill["qty"]
        before = qty - signed
        if abs(before) < 1e-12 or before * signed > 0:
            fill["kind"] = "entry"
        elif abs(signed) > abs(before) + 1e-12:
            fill["kind"] = "flip"
        else:
            fill["kind"] = "exit"
        qty = before
    return fills


def trading(var_dir: Path, symbol: str, hours: float) -> dict[str, Any]:
    """The live picture from ``trading.db``: the last ``hours`` of prices (each decided bar's
    close) with the fills in them, the position, equity, cash, today's P&L and risk state."""
    db = data_path(var_dir, "trading.db")
    if not db.is_file():
        return {"error": f"no trading state yet ({db} does not exist: the bot has not run)"}
    with TradingReader.open(db) as state:      # one snapshot: fills, position and equity agree
        last_ts = state.last_decided_ts(symbol)
        since = (last_ts or 0) - int(hours * HOUR_MS)
        prices = state.closes(symbol, since)
        fills = [{k: f[k] for k in FILL_FIELDS}
                 for f in state.fills(since, limit=None, symbol=symbol)]
        pos = asdict(state.position(symbol))
        equity = state.equity_curve(since, limit=None)
        now = state.latest_equity()
        account = state.account()
        fills_total = state.fill_count()
    risk = account.get("risk_state") or {}
    return {
        "symbol": symbol, "last_bar_ts": last_ts, "prices": prices,
        "fills": classify_fills(fills, pos["qty"]), "position": pos, "equity": equity,
        "latest": now, "risk": risk, "last_close": account.get("last_close"),
        "today_pnl": day_pnl(None if now is None else now["equity"],
                             risk.get("day_start_equity")),
        "fills_total": fills_total,
    }


# --- the monitor (services/monitor/store.py) -------------------------------------------------
def resource_history(var_dir: Path, hours: float, now_ms: int) -> list[dict[str, Any]]:
    """Slices' and the tree's history rows of the last ``hours``, bucketed so that a series
    has at most MAX_POINTS points: max memory, cap, mean and max CPU, OOM kills."""
    since = now_ms - int(hours * HOUR_MS)
    bucket = max(1, int(hours * HOUR_MS) // MAX_POINTS)
    return read(MonitorReader, data_path(var_dir, "monitor.db"),
                lambda monitor: monitor.resource_history(since, bucket), [])


def program_history(var_dir: Path, hours: float, now_ms: int) -> list[dict[str, Any]]:
    """Per program over the last ``hours``: restarts seen (first and last counter), peak
    process memory, the last state."""
    since = now_ms - int(hours * HOUR_MS)
    return read(MonitorReader, data_path(var_dir, "monitor.db"),
                lambda monitor: monitor.program_history(since), [])


def alerts(var_dir: Path, hours: float, now_ms: int, limit: int = 500) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts of the last ``hours``, newest first."""
    since = now_ms - int(hours * HOUR_MS)
    return read(MonitorReader, data_path(var_dir, "monitor.db"),
                lambda monitor: monitor.alerts(since, limit)[::-1], [])


def mode_changes(var_dir: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` mode changes, newest first."""
    return read(MonitorReader, data_path(var_dir, "monitor.db"),
                lambda monitor: monitor.modes(limit)[::-1], [])


def cpu_quotas(cfg: Config) -> dict[str, float | None]:
    """Cores each slice may use by the allocation table (a slice without a quota of its own
    is held by the tree's); the tree under its own name."""
    table = cgexec.load_table(cfg)
    parent = table.parent.cpu_quota
    return {table.parent.name: parent,
            **{name: sl.cpu_quota if sl.cpu_quota is not None else parent
               for name, sl in table.slices.items()}}


def snapshot(cfg: Config, timeout_ms: int = 300) -> dict[str, Any]:
    """The monitor's cache keys (``monitor:sample``, ``monitor:mode``, ``monitor:alerts``):
    one round trip, no retry; ``error`` says why there is none (cache or monitor down)."""
    client = CacheClient(cfg, timeout_ms=timeout_ms, retries=0)
    try:
        sample, mode, recent = client.mget(list(SNAPSHOT_KEYS))
    except BusError as exc:
        return {"error": f"cache not reachable: {exc}"}
    finally:
        client.close()
    out = {"sample": sample, "mode": mode, "alerts": recent or []}
    if sample is None and mode is None:
        out["error"] = "no monitor snapshot in the cache (the monitor is not running?)"
    return out


# --- job runs (shared/jobs/runs.py) ---------------------------------------------------------
def job_runs(var_dir: Path, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` job runs, newest first."""
    return read(JobRunsReader, data_path(var_dir, "jobs.db"),
                lambda runs: [run.to_dict() for run in runs.history(limit)], [])


# --- reports (shared/backtest/report.py) -----------------------------------------------------
def reports(reports_dir: Path) -> list[dict[str, Any]]:
    return list_reports(reports_dir) if reports_dir.is_dir() else []


def report(reports_dir: Path, run_id: str) -> dict[str, Any]:
    return load_report(reports_dir, run_id)


# --- models (shared/models/registry.py; metadata only, never a model) ------------------------
def models(model_dir: Path) -> list[dict[str, Any]]:
    """Every registered version, newest first: its metadata.json and whether it is the one
    promoted (``read_catalogue``: nothing is created where there is no registry)."""
    return read_catalogue(model_dir)
