"""What every page shares: the configuration, the cached readers and the formatting.

Every reader is wrapped in ``st.cache_data`` with a TTL and a bound on its entries and size,
so a page left open, or many tabs, re-read at most once per TTL and never hold more than a
few pictures (the server caps all of them together, ``server.maxCacheDataSize``)."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import streamlit as st

from services.dashboard import data
from shared.config import Config, load_config
from shared.logs import escape

MIB = 1 << 20
HOURS = {"1 hour": 1.0, "6 hours": 6.0, "24 hours": 24.0, "7 days": 168.0}


MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]()!<>|$~])")   # what can add a link, image, tag


def plain(value: Any) -> str:
    """``value`` as text to put inside ``st.markdown``: control characters escaped (as in the
    logs) and Markdown's special characters backslashed, so a report's label, a symbol or a
    reason from outside shows as written and cannot add a link, an image or a heading."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", escape(str(value)))


@st.cache_resource
def config() -> Config:
    """The stack's configuration (defaults, BDT_CONFIG, BDT_* variables), read once."""
    return load_config()


def var() -> str:
    return str(config().var_dir)


def now_ms() -> int:
    return int(time.time() * 1000)


@st.cache_data(ttl=5, max_entries=8, max_size="8mb", show_spinner=False)
def trading(var_dir: str, symbol: str, hours: float) -> dict[str, Any]:
    return data.trading(Path(var_dir), symbol, hours)


@st.cache_data(ttl=5, max_entries=2, show_spinner=False)
def snapshot(var_dir: str) -> dict[str, Any]:
    """The monitor's cache snapshot (``var_dir`` only keys the cache entry)."""
    return data.snapshot(config())


@st.cache_data(ttl=15, max_entries=4, max_size="8mb", show_spinner=False)
def resource_history(var_dir: str, hours: float) -> list[dict[str, Any]]:
    return data.resource_history(Path(var_dir), hours, now_ms())


@st.cache_data(ttl=15, max_entries=4, show_spinner=False)
def program_history(var_dir: str, hours: float) -> list[dict[str, Any]]:
    return data.program_history(Path(var_dir), hours, now_ms())


@st.cache_data(ttl=15, max_entries=4, show_spinner=False)
def alerts(var_dir: str, hours: float) -> list[dict[str, Any]]:
    return data.alerts(Path(var_dir), hours, now_ms())


@st.cache_data(ttl=15, max_entries=2, show_spinner=False)
def mode_changes(var_dir: str) -> list[dict[str, Any]]:
    return data.mode_changes(Path(var_dir))


@st.cache_data(ttl=300, max_entries=2, show_spinner=False)
def cpu_quotas(var_dir: str) -> dict[str, float | None]:
    return data.cpu_quotas(config())


@st.cache_data(ttl=15, max_entries=2, show_spinner=False)
def job_runs(var_dir: str) -> list[dict[str, Any]]:
    return data.job_runs(Path(var_dir))


@st.cache_data(ttl=30, max_entries=2, show_spinner=False)
def reports(reports_dir: str) -> list[dict[str, Any]]:
    return data.reports(Path(reports_dir))


@st.cache_data(ttl=300, max_entries=6, max_size="32mb", show_spinner=False)
def report(reports_dir: str, run_id: str) -> dict[str, Any]:
    return data.report(Path(reports_dir), run_id)


@st.cache_data(ttl=60, max_entries=2, show_spinner=False)
def models(model_dir: str) -> list[dict[str, Any]]:
    return data.models(Path(model_dir))


def when(ms: int | float | None) -> str:
    """Epoch ms as UTC text; '-' for none."""
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def at(epoch_s: float | None) -> str:
    return "-" if epoch_s is None else when(epoch_s * 1000)


def mib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / MIB:,.0f} MiB"


def figure(key: str, value: Any) -> str:
    """A metric as text: percentages for returns, drawdowns and rates, a withheld figure with
    its reason, times for *_ts."""
    if isinstance(value, dict) and "withheld" in value:
        return f"withheld: {value['withheld']}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    if value is None:
        return "-"
    if key.endswith("_ts") and isinstance(value, int):
        return when(value)
    if isinstance(value, float):
        pct = ("return", "drawdown", "exposure", "win_rate", "volatility")
        is_pct = any(p in key for p in pct) and not key.endswith(("_days", "_min", "_s"))
        return f"{value * 100:.2f} %" if is_pct else f"{value:,.4f}"
    return str(value)


def window(key: str, default: str = "6 hours", longest: str = "7 days") -> float:
    """A time window picked by the operator (up to ``longest``), in hours."""
    names = [n for n in HOURS if HOURS[n] <= HOURS[longest]]
    choice = st.selectbox("window", names, index=names.index(default), key=key)
    return HOURS[choice]
