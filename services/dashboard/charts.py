"""The dashboard's charts (Altair / Vega-Lite, drawn by the browser): each builder takes rows
as the readers of ``services.dashboard.data`` return them. Times are epoch ms, shown in UTC.
Tooltips show figures as ``shared.formatting`` writes them (a ``*_shown`` text column), so a
price, an amount or a percentage reads as in ``bdt`` and the reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import altair as alt
import pandas as pd

from shared import formatting as fmt

MIB = 1 << 20
FILL_COLORS = alt.Scale(domain=["entry", "exit", "flip"], range=["#1a7f37", "#cf222e", "#8250df"])


def frame(rows: list[dict[str, Any]], time_cols: tuple[str, ...] = ("ts",)) -> pd.DataFrame:
    """Rows as a DataFrame with epoch-ms columns turned into UTC times."""
    df = pd.DataFrame(rows)
    for col in time_cols:
        if col in df:
            df[col] = pd.to_datetime(df[col], unit="ms", utc=True)
    return df


def shown(df: pd.DataFrame, column: str, as_text: Callable[[Any], str], title: str
          ) -> alt.Tooltip:
    """A tooltip of ``column`` as ``as_text`` writes it (a ``<column>_shown`` column added)."""
    df[f"{column}_shown"] = df[column].map(as_text) if column in df else None
    return alt.Tooltip(f"{column}_shown:N", title=title)


def price(prices: list[dict[str, Any]], fills: list[dict[str, Any]]) -> alt.LayerChart:
    """The close of every decided bar, with each fill marked: ▲ buy, ▼ sell, coloured entry /
    exit / flip; a fill's tooltip has its price, quantity, P&L and reason."""
    bars = frame(prices)
    line = alt.Chart(bars).mark_line(strokeWidth=1.2, color="#1f6feb").encode(
        x=alt.X("ts:T", title="time (UTC)"),
        y=alt.Y("close:Q", title="price", scale=alt.Scale(zero=False)),
        tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"),
                 shown(bars, "close", fmt.price, "close"), "action:N"])
    layers: list[alt.Chart] = [line]
    if fills:
        marks = frame(fills).assign(
            shape=lambda d: d["side"].map({"buy": "triangle-up", "sell": "triangle-down"}))
        tips = [shown(marks, "qty", fmt.quantity, "qty"),
                shown(marks, "price", fmt.price, "price"),
                shown(marks, "realized_pnl", lambda v: fmt.money(v, signed=True), "realized P&L")]
        layers.append(alt.Chart(marks).mark_point(size=110, filled=True, opacity=0.9).encode(
            x="ts:T", y="price:Q",
            shape=alt.Shape("shape:N", scale=None),
            color=alt.Color("kind:N", scale=FILL_COLORS, title="fill"),
            tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"), "kind:N", "side:N", *tips,
                     "reason:N"]))
    return alt.layer(*layers).properties(height=320)


def line(rows: list[dict[str, Any]], y: str, title: str, color: str = "#1f6feb",
         area: bool = False, height: int = 200,
         as_text: Callable[[Any], str] | None = None) -> alt.Chart:
    """``y`` over time; its tooltip written by ``as_text`` (default: ``figure`` of ``y``)."""
    df = frame(rows)
    tip = shown(df, y, as_text or (lambda v: fmt.figure(y, v)), title)
    chart = alt.Chart(df)
    mark = chart.mark_area(color=color, opacity=0.3, line={"color": color}) if area \
        else chart.mark_line(color=color, strokeWidth=1.2)
    return mark.encode(
        x=alt.X("ts:T", title="time (UTC)"),
        y=alt.Y(f"{y}:Q", title=title, scale=alt.Scale(zero=area)),
        tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"), tip],
    ).properties(height=height)


def equity(points: list[dict[str, Any]], height: int = 260) -> alt.Chart:
    return line(points, "equity", "equity", height=height, as_text=fmt.money)


def drawdown(points: list[dict[str, Any]], height: int = 180) -> alt.Chart:
    """Drawdown in % below the running peak (points carry it as a fraction; no "-0")."""
    rows = [{"ts": p["ts"], "drawdown_pct": 0.0 - 100.0 * p["drawdown"]} for p in points]
    return line(rows, "drawdown_pct", "drawdown (%)", color="#cf222e", area=True,
                height=height, as_text=lambda v: fmt.percent(v / 100))


def against_cap(rows: list[dict[str, Any]], value: str, cap: str, title: str,
                columns: int = 3) -> alt.FacetChart:
    """One small chart per slice: ``value`` over time, the cap as a dashed red line."""
    df = frame(rows)
    base = alt.Chart().encode(x=alt.X("ts:T", title=None))
    used = base.mark_line(strokeWidth=1.3, color="#1f6feb").encode(
        y=alt.Y(f"{value}:Q", title=title),
        tooltip=[alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M"),
                 alt.Tooltip(f"{value}:Q", format=fmt.D3_FIGURE),
                 alt.Tooltip(f"{cap}:Q", format=fmt.D3_FIGURE)])
    limit = base.mark_line(strokeDash=[5, 3], color="#cf222e").encode(y=f"{cap}:Q")
    return alt.layer(used, limit, data=df).properties(width=230, height=120).facet(
        facet=alt.Facet("name:N", title=None, sort=alt.SortField("order")), columns=columns,
    ).resolve_scale(y="independent")


def jobs(runs: list[dict[str, Any]]) -> alt.LayerChart:
    """Each run's peak memory (bar, coloured by outcome) against its slice's cap (tick)."""
    df = frame(runs, ("started_at",)).assign(
        run=lambda d: d["job"] + " #" + d["id"].astype(str),
        peak_mib=lambda d: d["peak_bytes"] / MIB, cap_mib=lambda d: d["cap_bytes"] / MIB)
    base = alt.Chart(df).encode(x=alt.X("run:N", sort=None, title=None))
    bars = base.mark_bar().encode(
        y=alt.Y("peak_mib:Q", title="peak memory (MiB)"),
        color=alt.Color("state:N", title="outcome"),
        tooltip=["run:N", "state:N", alt.Tooltip("peak_mib:Q", format=",.0f"),
                 alt.Tooltip("cap_mib:Q", format=",.0f"),
                 alt.Tooltip("duration_s:Q", format=",.1f")])
    caps = base.mark_tick(color="#cf222e", thickness=2, size=18).encode(y="cap_mib:Q")
    return alt.layer(bars, caps).properties(height=220)


def durations(runs: list[dict[str, Any]]) -> alt.Chart:
    df = frame(runs, ("started_at",)).assign(run=lambda d: d["job"] + " #" + d["id"].astype(str))
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("run:N", sort=None, title=None),
        y=alt.Y("duration_s:Q", title="duration (s)"),
        color=alt.Color("state:N", title="outcome"),
        tooltip=["run:N", "state:N", alt.Tooltip("duration_s:Q", format=",.1f")],
    ).properties(height=180)


def folds(rows: list[dict[str, Any]], value: str) -> alt.Chart:
    """A walk-forward's folds: ``value`` of each fold as a bar (a return on a % axis)."""
    df = pd.DataFrame(rows)
    tip = shown(df, value, lambda v: fmt.figure(value, v), value.replace("_", " "))
    axis = alt.Axis(format="~%") if set(value.split("_")) & fmt.PERCENT_WORDS else alt.Axis()
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("fold:N", sort=None),
        y=alt.Y(f"{value}:Q", title=value.replace("_", " "), axis=axis),
        color=alt.condition(f"datum.{value} >= 0", alt.value("#1a7f37"), alt.value("#cf222e")),
        tooltip=["fold:N", tip],
    ).properties(height=200)
