"""What the dashboard reads, read-only and bounded, as plain Python (no Streamlit here; the
pages wrap these in ``st.cache_data``): the bot's trading state, the monitor's history and
alerts, the job runs, the reports, the model registry's metadata and the monitor's cache
snapshot. Nothing here loads a model or scans the market store, and no database is opened
for writing: SQLite files are opened with ``mode=ro``; a file that is not there yet reads as
empty."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.backtest.report import list_reports, load_report
from shared.bus.client import BusError
from shared.config import Config
from shared.jobs.runs import COLUMNS as JOB_COLUMNS
from shared.models.artifacts import ModelError
from shared.models.registry import ModelRegistry
from shared.protocol.cache import CacheClient
from shared.resources import cgexec

HOUR_MS = 3_600_000
MAX_POINTS = 400          # per series on a chart: older history is bucketed to this many
SNAPSHOT_KEYS = ("monitor:sample", "monitor:mode", "monitor:alerts")


def data_path(var_dir: Path, name: str) -> Path:
    return var_dir / "data" / name


Query = Callable[..., list[dict[str, Any]]]


@contextmanager
def reader(path: Path) -> Iterator[Query]:
    """``q(sql, args=())`` → rows as dicts, on one read-only connection in one read
    transaction: every query sees the same snapshot of the database (its writer goes on in WAL
    mode meanwhile). The file must exist."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=2)
    try:
        conn.execute("BEGIN")

        def q(sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
            cur = conn.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

        yield q
    finally:
        conn.close()


def query(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the database at ``path`` opened read-only; [] when there is no file
    (its writer has not run yet)."""
    if not path.is_file():
        return []
    with reader(path) as q:
        return q(sql, args)


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
    with reader(db) as q:                  # one snapshot: fills, position and equity agree
        last = q("SELECT max(bar_ts) AS ts FROM decisions WHERE symbol = ?", (symbol,))
        last_ts = last[0]["ts"] if last else None
        since = (last_ts or 0) - int(hours * HOUR_MS)
        prices = q("SELECT bar_ts AS ts, close, action, reason FROM decisions "
                   "WHERE symbol = ? AND bar_ts >= ? ORDER BY bar_ts", (symbol, since))
        fills = q("SELECT f.ts, f.side, f.qty, f.price, f.fee, f.realized_pnl, o.reason "
                  "FROM fills f JOIN orders o USING (client_id) "
                  "WHERE f.symbol = ? AND f.ts >= ? ORDER BY f.id", (symbol, since))
        position = q("SELECT symbol, qty, avg_price, opened_ts, realized_pnl FROM positions "
                     "WHERE symbol = ?", (symbol,))
        equity = q("SELECT ts, equity, cash, position_value FROM equity WHERE ts >= ? "
                   "ORDER BY ts", (since,))
        latest = q("SELECT ts, equity, cash, position_value FROM equity "
                   "ORDER BY ts DESC LIMIT 1")
        account = {r["key"]: json.loads(r["value"])
                   for r in q("SELECT key, value FROM account")}
        fills_total = q("SELECT count(*) AS n FROM fills")[0]["n"]
    pos = position[0] if position else {"symbol": symbol, "qty": 0.0, "avg_price": 0.0,
                                        "opened_ts": None, "realized_pnl": 0.0}
    risk = account.get("risk_state") or {}
    now = latest[0] if latest else None
    start = risk.get("day_start_equity")
    return {
        "symbol": symbol, "last_bar_ts": last_ts, "prices": prices,
        "fills": classify_fills(fills, pos["qty"]), "position": pos, "equity": equity,
        "latest": now, "risk": risk, "last_close": account.get("last_close"),
        "today_pnl": (now["equity"] - start) if now and start else None,
        "fills_total": fills_total,
    }


# --- the monitor (services/monitor/store.py) -------------------------------------------------
def resource_history(var_dir: Path, hours: float, now_ms: int) -> list[dict[str, Any]]:
    """Slices' and the tree's history rows of the last ``hours``, bucketed so that a series
    has at most MAX_POINTS points: max memory, cap, mean and max CPU, OOM kills."""
    db = data_path(var_dir, "monitor.db")
    since = now_ms - int(hours * HOUR_MS)
    bucket = max(1, int(hours * HOUR_MS) // MAX_POINTS)
    return query(db, "SELECT name, kind, (ts / ?) * ? AS ts, max(memory_process_max) AS memory,"
                     " max(memory_page_cache) AS page_cache, max(cap) AS cap,"
                     " avg(cpu_cores_mean) AS cpu, max(cpu_cores_max) AS cpu_max,"
                     " max(oom_kills) AS oom_kills FROM history"
                     " WHERE kind IN ('slice', 'tree') AND ts >= ?"
                     " GROUP BY name, kind, (ts / ?) ORDER BY name, ts",
                 (bucket, bucket, since, bucket))


def program_history(var_dir: Path, hours: float, now_ms: int) -> list[dict[str, Any]]:
    """Per program over the last ``hours``: restarts seen (first and last counter), peak
    process memory, the last state."""
    db = data_path(var_dir, "monitor.db")
    since = now_ms - int(hours * HOUR_MS)
    return query(db, "SELECT name, min(restarts) AS restarts_first, max(restarts) AS restarts,"
                     " max(memory_process_max) AS memory_peak, max(ts) AS last_ts,"
                     " (SELECT state FROM history h2 WHERE h2.name = h.name AND"
                     "  h2.kind = 'program' ORDER BY ts DESC LIMIT 1) AS state"
                     " FROM history h WHERE kind = 'program' AND ts >= ?"
                     " GROUP BY name ORDER BY name", (since,))


def alerts(var_dir: Path, hours: float, now_ms: int, limit: int = 500) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts of the last ``hours``, newest first."""
    rows = query(data_path(var_dir, "monitor.db"),
                 "SELECT id, ts, kind, severity, subject, message, figures, notified FROM alerts"
                 " WHERE ts >= ? ORDER BY id DESC LIMIT ?",
                 (now_ms - int(hours * HOUR_MS), limit))
    for row in rows:
        row["notified"] = bool(row["notified"])
    return rows


def mode_changes(var_dir: Path, limit: int = 50) -> list[dict[str, Any]]:
    return query(data_path(var_dir, "monitor.db"),
                 "SELECT ts, mode, old, reason, memory_bytes, cpu_pct FROM modes "
                 "ORDER BY ts DESC LIMIT ?", (limit,))


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
    return query(data_path(var_dir, "jobs.db"),
                 f"SELECT {', '.join(JOB_COLUMNS)} FROM job_runs ORDER BY id DESC LIMIT ?",
                 (limit,))


# --- reports (shared/backtest/report.py) -----------------------------------------------------
def reports(reports_dir: Path) -> list[dict[str, Any]]:
    return list_reports(reports_dir) if reports_dir.is_dir() else []


def report(reports_dir: Path, run_id: str) -> dict[str, Any]:
    return load_report(reports_dir, run_id)


# --- models (shared/models/registry.py; metadata only, never a model) ------------------------
def models(model_dir: Path) -> list[dict[str, Any]]:
    """Every registered version, newest first: its metadata.json and whether it is the one
    promoted. The registry is opened only where it exists (opening creates its folder)."""
    if not (model_dir / "versions").is_dir():
        return []
    registry = ModelRegistry(model_dir)
    current = registry.current()
    out = []
    for version in reversed(registry.versions()):
        try:
            meta = registry.metadata(version)
        except ModelError as exc:
            meta = {"error": str(exc)}
        out.append({"version": version, "current": version == current, "metadata": meta})
    return out
