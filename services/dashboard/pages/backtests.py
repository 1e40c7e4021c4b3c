"""Backtests and walk-forward: each report's equity, drawdown, folds (a walk-forward report's
``folds``) and metrics; two runs side by side — from ``<reports>/<id>/report.json``."""

from typing import Any

import pandas as pd
import streamlit as st

from services.dashboard import charts, ui

NONE = "(none)"


def fold_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A walk-forward report's folds (shared.backtest.walkforward.fold_rows), flattened: fold
    number, windows, out-of-sample (``oos_*``) and in-sample (``is_*``) figures, WFE."""
    rows = []
    for i, fold in enumerate(doc.get("folds") or [], 1):
        figures = {**fold, **(fold.get("metrics") or {}),
                   **{f"oos_{k}": v for k, v in (fold.get("oos") or {}).items()},
                   **{f"is_{k}": v for k, v in (fold.get("is") or {}).items()}}
        rows.append({"fold": str(figures.get("index", figures.get("fold", i))),
                     **{k: ui.when(v) if k.endswith("_ts") else v for k, v in figures.items()
                        if k != "fold" and isinstance(v, int | float | str)}})
    return rows


def show(doc: dict[str, Any]) -> None:
    """One report: what ran, its equity and drawdown, its folds and monthly returns."""
    run = doc.get("run") or {}
    st.markdown(f"**{ui.plain(doc.get('kind'))}** {ui.plain(doc.get('symbol'))} · "
                f"{ui.plain(doc.get('strategy'))} · "
                f"{ui.when(doc.get('start_ts'))} → {ui.when(doc.get('end_ts'))}")
    st.caption(f"{ui.plain(doc['id'])} · model {ui.plain(doc.get('model_version') or '-')} · "
               f"{run.get('wall_s', '-')} s · peak {ui.mib(run.get('peak_bytes'))} · "
               f"overrides {ui.plain(doc.get('overrides') or {})}")
    points = doc.get("equity_chart") or []
    if points:
        st.altair_chart(charts.equity(points), width="stretch")
        st.altair_chart(charts.drawdown(points), width="stretch")
    else:
        st.info("no equity chart in this report")
    folds = fold_rows(doc)
    if folds:
        value = next((k for k in ("oos_total_return", "total_return", "return", "sharpe")
                      if k in folds[0]
                      and isinstance(folds[0][k], int | float)), None)
        st.markdown(f"**Folds ({len(folds)})**")
        if value:
            st.altair_chart(charts.folds(folds, value), width="stretch")
        st.dataframe(pd.DataFrame(folds), hide_index=True, width="stretch")
    months = doc.get("monthly_returns") or []
    if months:
        st.markdown("**Monthly returns**")
        st.dataframe(pd.DataFrame([{"month": m["month"], "return": ui.figure("return",
                                                                             m["return"])}
                                   for m in months]), hide_index=True)


st.title("Backtests and walk-forward")
rdir = str(ui.config().reports_dir)
listed = ui.reports(rdir)
if not listed:
    st.info(f"no report in {rdir} yet (bdt backtest, or the 03:00 job, writes them)")
    st.stop()

kinds = sorted({r.get("kind") or "?" for r in listed})
kind = st.radio("kind", ["all", *kinds], horizontal=True)
shown = [r for r in listed if kind == "all" or r.get("kind") == kind]
st.dataframe(pd.DataFrame([{
    "id": r["id"], "kind": r.get("kind"), "strategy": r.get("strategy"),
    "symbol": r.get("symbol"), "from": ui.when(r.get("start_ts")),
    "to": ui.when(r.get("end_ts")), "total return": ui.figure("return", r.get("total_return")),
    "max drawdown": ui.figure("drawdown", r.get("max_drawdown")), "trades": r.get("trades"),
    "error": r.get("error")} for r in shown]), hide_index=True, width="stretch")

ids = [r["id"] for r in shown if "error" not in r]
if not ids:
    st.stop()
left, right = st.columns(2)
first = left.selectbox("report", ids, index=0)
second = right.selectbox("side by side with", [NONE, *ids], index=2 if len(ids) > 1 else 0)
docs = [ui.report(rdir, first)] + ([] if second in (NONE, first) else [ui.report(rdir, second)])

for column, doc in zip(st.columns(len(docs)), docs, strict=True):
    with column:
        show(doc)

st.subheader("Metrics")
metrics = [doc.get("metrics") or {} for doc in docs]
keys = list(dict.fromkeys(k for m in metrics for k in m))
st.dataframe(pd.DataFrame([{"metric": k, **{doc["id"]: ui.figure(k, m.get(k))
                                           for doc, m in zip(docs, metrics, strict=True)}}
                           for k in keys]),
             hide_index=True, width="stretch", height=min(35 * (len(keys) + 1) + 3, 1200))

for doc in docs:
    trades = doc.get("trades") or []
    with st.expander(f"Trades of {doc['id']} ({len(trades)})"):
        if trades:
            st.dataframe(pd.DataFrame(trades[:500]).assign(
                entry=lambda d: d["entry_ts"].map(ui.when),
                exit=lambda d: d["exit_ts"].map(ui.when)).drop(columns=["entry_ts", "exit_ts"]),
                hide_index=True, width="stretch")
