"""Backtest and walk-forward reports: ``<reports>/<run-id>/report.json`` (everything,
machine-readable) and a self-contained ``report.html`` (inline SVG charts, no script, no
network): equity and drawdown, the metrics, monthly returns, the trades — and first, when the
document has them, its ``headline`` and the positions open at the end; a walk-forward's folds
and the gate's decision after the drawdown.

**One schema** (``COMMON_FIELDS`` + a section per kind, ``SECTIONS``): a backtest report is the
common fields; a walk-forward report is the common fields plus ``folds`` and ``gate``. Both
documents are built here (``result_document``, ``walkforward_document``, through
``document``), checked by ``validate`` before they are written, and ``render_html`` draws
either from the document alone. Numbers are written by ``shared.formatting``, as ``bdt`` prints
them. ``list_reports`` and ``load_report`` are what ``bdt reports`` and the dashboard read."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import secrets
from pathlib import Path
from typing import Any

from shared.backtest.runner import BacktestResult
from shared.backtest.walkforward import FoldResult, fold_rows, stitch
from shared.formatting import (
    axis,
    clip,
    count,
    duration,
    figure,
    money,
    number,
    percent,
    price,
    quantity,
    size,
)
from shared.market.bars import ts_text

REPORT_JSON, REPORT_HTML = "report.json", "report.html"
MAX_TRADES_SHOWN = 500          # in the HTML; the JSON has all


def new_run_id(kind: str, strategy: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{kind}-{strategy}-{secrets.token_hex(2)}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the one schema --------------------------------------------------------------------------
COMMON_FIELDS: dict[str, tuple[type, ...]] = {     # every report, in this order
    "id": (str,), "kind": (str,), "created_at": (str,), "symbol": (str,),
    "start_ts": (int,), "end_ts": (int,), "strategy": (str,), "model_version": (str, type(None)),
    "overrides": (dict,), "label": (str,), "settings": (dict,), "headline": (list,),
    "open_positions": (list,), "metrics": (dict,), "monthly_returns": (list,), "run": (dict,),
    "trades": (list,), "equity_chart": (list,),
}
SECTIONS: dict[str, dict[str, tuple[type, ...]]] = {   # what each kind adds, after them
    "backtest": {},
    "walkforward": {"folds": (list,), "gate": (dict,)},
}
FOLD_FIELDS = ("index", "train_start", "train_end", "test_start", "test_end", "oos", "is", "wfe",
               "trades", "error", "seconds")      # a fold row (walkforward.fold_rows)


def validate(doc: dict[str, Any]) -> list[str]:
    """What in ``doc`` does not fit the schema: an unknown kind, a field missing, unknown or
    of the wrong type, a fold row without its fields, a gate without its reasons; [] when it
    fits."""
    kind = doc.get("kind")
    if kind not in SECTIONS:
        return [f"kind {kind!r} is not one of {sorted(SECTIONS)}"]
    fields = {**COMMON_FIELDS, **SECTIONS[kind]}
    problems = [f"{name}: missing" for name in fields if name not in doc]
    problems += [f"{name}: not a field of a {kind} report" for name in doc if name not in fields]
    problems += [f"{name}: {type(doc[name]).__name__}, not {'/'.join(t.__name__ for t in types)}"
                 for name, types in fields.items()
                 if name in doc and (not isinstance(doc[name], types)
                                     or isinstance(doc[name], bool))]
    folds, gate = doc.get("folds"), doc.get("gate")
    for i, fold in enumerate(folds if isinstance(folds, list) else []):
        missing = [f for f in FOLD_FIELDS if not isinstance(fold, dict) or f not in fold]
        if missing:
            problems.append(f"folds[{i}]: missing {', '.join(missing)}")
    if isinstance(gate, dict) and not ("reasons" in gate or "reason" in gate):
        problems.append("gate: neither reasons nor reason")
    return problems


def document(run_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    """A report document of ``kind``: ``fields`` (the common ones and the kind's section) in
    the schema's order, with its id, kind and time of creation. ValueError naming what does
    not fit the schema."""
    doc = {"id": run_id, "kind": kind, "created_at": dt.datetime.now(dt.UTC).isoformat(),
           **fields}
    problems = validate(doc)
    if problems:
        raise ValueError(f"report {run_id} does not fit the {kind} schema: "
                         + "; ".join(problems))
    return {name: doc[name] for name in (*COMMON_FIELDS, *SECTIONS[kind])}


def result_document(result: BacktestResult, run_id: str, kind: str = "backtest"
                    ) -> dict[str, Any]:
    """A backtest's report document."""
    spec = result.spec
    return document(
        run_id, kind, symbol=spec.symbol, start_ts=spec.start_ts, end_ts=spec.end_ts,
        strategy=result.strategy, model_version=result.model_version,
        overrides=spec.overrides, label=spec.label, settings=result.settings,
        headline=result.headline, open_positions=result.open_positions,
        metrics=result.metrics, monthly_returns=result.monthly, run=result.run,
        trades=[t.to_dict() for t in result.trades], equity_chart=result.chart)


def walkforward_document(run_id: str, results: list[FoldResult], *, symbol: str,
                         strategy: str, summary: dict[str, Any], gate: dict[str, Any],
                         overrides: dict[str, str], settings: dict[str, Any],
                         starting_cash: float, wall_s: float) -> dict[str, Any]:
    """A walk-forward's report document: the common fields over the stitched out-of-sample
    run — its equity curve and monthly returns, every fold's out-of-sample round trips, the
    ``summary`` as metrics (with whether the gate promoted) — then the folds and the gate's
    record (``shared.models.promotion.challenge``)."""
    ok = [r for r in results if r.error is None]
    curve = stitch(ok, starting_cash)
    return document(
        run_id, "walkforward", symbol=symbol, start_ts=results[0].fold.train_start,
        end_ts=results[-1].fold.test_end, strategy=strategy,
        model_version=gate.get("challenger_version"), overrides=overrides, label="",
        settings=settings, headline=[], open_positions=[],
        metrics={**summary, "promoted": gate.get("promoted", False)},
        monthly_returns=stitched_months(curve, starting_cash), run={"wall_s": wall_s},
        trades=[t for r in ok for t in r.trade_rows], equity_chart=equity_chart(curve),
        folds=fold_rows(results), gate=gate)


def equity_chart(curve: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """(ts, equity) points as the report's chart rows, with the drawdown from the peak."""
    peak, chart = 0.0, []
    for ts, equity in curve:
        peak = max(peak, equity)
        chart.append({"ts": ts, "equity": equity, "drawdown": 1 - equity / peak if peak else 0})
    return chart


def stitched_months(curve: list[tuple[int, float]], starting_cash: float
                    ) -> list[dict[str, Any]]:
    """Each calendar month's return on the stitched out-of-sample curve (what the report's
    ``oos_total_return`` compounds): ``metrics.monthly_returns`` on it as daily closes."""
    from shared.backtest.metrics import monthly_returns
    from shared.backtest.state import EquityTracker

    tracker = EquityTracker(1)
    tracker.daily = list(curve)
    return monthly_returns(tracker, starting_cash)


def write_report(doc: dict[str, Any], reports_dir: Path) -> Path:
    """Write report.json and report.html for ``doc``; the report's directory. ValueError,
    writing nothing, when ``doc`` does not fit the schema."""
    problems = validate(doc)
    if problems:
        raise ValueError(f"report {doc.get('id')} does not fit the schema: "
                         + "; ".join(problems))
    folder = reports_dir / doc["id"]
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / REPORT_JSON, json.dumps(doc, indent=1, default=str) + "\n")
    _atomic_write(folder / REPORT_HTML, render_html(doc))
    return folder


def list_reports(reports_dir: Path) -> list[dict[str, Any]]:
    """Every report, newest first: id, kind, strategy, symbol, range, headline figures."""
    out = []
    for path in sorted(reports_dir.glob(f"*/{REPORT_JSON}"), reverse=True):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            out.append({"id": path.parent.name, "error": "unreadable report.json"})
            continue
        m = doc.get("metrics", {})
        out.append({"id": doc["id"], "kind": doc.get("kind"), "strategy": doc.get("strategy"),
                    "symbol": doc.get("symbol"), "start_ts": doc.get("start_ts"),
                    "end_ts": doc.get("end_ts"), "total_return": m.get("total_return"),
                    "max_drawdown": m.get("max_drawdown"), "trades": m.get("trades"),
                    "path": str(path.parent)})
    return out


def load_report(reports_dir: Path, run_id: str) -> dict[str, Any]:
    """One report's document; FileNotFoundError naming the id when there is none."""
    path = reports_dir / run_id / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no report {run_id!r} in {reports_dir}")
    return json.loads(path.read_text())


# --- what people read (report.html and `bdt reports show`) -----------------------------------
OPEN_POSITION_HEADER = ["symbol", "quantity", "average price", "marked at", "unrealised P&L",
                        "cost to close"]


def open_position_cells(position: dict[str, Any]) -> list[str]:
    """One of the report's ``open_positions`` as the cells of OPEN_POSITION_HEADER."""
    return [str(position.get("symbol") or "-"), quantity(position.get("qty"), signed=True),
            price(position.get("avg_price")), price(position.get("mark")),
            money(position.get("unrealized_pnl"), signed=True),
            money(position.get("cost_to_close"))]


def run_text(run: dict[str, Any] | None) -> str:
    """The run's wall time and peak memory, in words where the report has none."""
    run = run or {}
    wall = duration(run.get("wall_s"), unknown="run time not recorded")
    peak = run.get("peak_bytes")
    return f"{wall}, " + (f"peak {size(peak)}" if peak else "peak memory not measured")


def overrides_text(overrides: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (overrides or {}).items()) or "none"


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value as text) of every metric, in the document's order."""
    return [(key.replace("_", " "), figure(key, value)) for key, value in metrics.items()]


def _svg_line(points: list[tuple[float, float]], width: int, height: int, color: str,
              fill: bool = False) -> str:
    """``points`` (epoch ms, value) as an SVG line with a labelled value axis (render.axis:
    one number style, no "-0"); ``fill`` shades between the line and zero."""
    if len(points) < 2:
        return (f'<svg width="{width}" height="{height}"><text x="4" y="14" font-size="11">'
                "too few points to draw</text></svg>")
    left, bottom, top = 64, height - 20, 10
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0

    def at_x(x: float) -> float:
        return (x - x0) / span_x * (width - left - 5) + left

    def at_y(y: float) -> float:
        return bottom - (y - y0) / span_y * (bottom - top)

    coords = " ".join(f"{at_x(x):.1f},{at_y(y):.1f}" for x, y in points)
    base = at_y(min(max(0.0, y0), y1))
    shape = (f'<polygon points="{left},{base:.1f} {coords} {width - 5},{base:.1f}" '
             f'fill="{color}" fill-opacity="0.25" stroke="none"/>' if fill else "")
    grid = "".join(
        f'<line x1="{left}" y1="{at_y(v):.1f}" x2="{width - 5}" y2="{at_y(v):.1f}" '
        f'stroke="#d0d7de" stroke-width="0.5"/><text x="{left - 4}" y="{at_y(v) + 3:.1f}" '
        f'font-size="10" text-anchor="end">{label}</text>' for v, label in axis(y0, y1))
    return (f'<svg width="{width}" height="{height}" role="img">{grid}{shape}'
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.2"/>'
            f'<text x="{left}" y="{height - 5}" font-size="10">{ts_text(x0)}</text>'
            f'<text x="{width - 5}" y="{height - 5}" font-size="10" text-anchor="end">'
            f"{ts_text(x1)}</text></svg>")


def _headline_html(doc: dict[str, Any]) -> str:
    """The headline and the positions open at the end, when the report has them."""
    lines = doc.get("headline") or []
    out = ("<ul class=headline>" + "".join(f"<li>{html.escape(str(t))}</li>" for t in lines)
           + "</ul>") if lines else ""
    positions = doc.get("open_positions") or []
    if positions:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in OPEN_POSITION_HEADER)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>"
                                        for c in open_position_cells(p)) + "</tr>"
                       for p in positions)
        out += f"<h2>Open at the end</h2><table><tr>{head}</tr>{rows}</table>"
    return out


def _metric_html(key: str, value: Any) -> str:
    cls = " class=muted" if isinstance(value, dict) and "withheld" in value else ""
    return (f"<tr><th>{html.escape(key.replace('_', ' '))}</th>"
            f"<td{cls}>{html.escape(figure(key, value))}</td></tr>")


def _folds_html(doc: dict[str, Any]) -> str:
    """A walk-forward's section: the fold chart (out-of-sample return per fold, as SVG bars),
    the folds' table and the gate's decision."""
    folds = doc.get("folds") or []
    values = [(f["oos"] or {}).get("total_return") or 0.0 for f in folds]
    top = max([abs(v) for v in values] + [1e-9])
    width, height, bar = 900, 160, max(4, 860 // max(1, len(values)))
    bars = "".join(
        f'<rect x="{20 + i * bar}" y="{80 - max(v, 0) / top * 70:.1f}" width="{bar - 2}" '
        f'height="{abs(v) / top * 70:.1f}" fill="{"#1a7f37" if v >= 0 else "#cf222e"}">'
        f"<title>fold {i}: {percent(v, 3, signed=True)}</title></rect>"
        for i, v in enumerate(values))
    rows = "".join(
        f"<tr><td>{f['index']}</td>"
        f"<td>{percent((f['oos'] or {}).get('total_return'), 3, signed=True)}</td>"
        f"<td>{percent((f['is'] or {}).get('total_return'), 3, signed=True)}</td>"
        f"<td>{number(f['wfe'])}</td><td>{count(f['trades'])}</td>"
        f"<td>{html.escape(f['error'] or '')}</td></tr>" for f in folds)
    gate = doc.get("gate", {})
    return (f'<h2>Folds: out-of-sample return</h2><svg width="{width}" height="{height}">'
            f'<line x1="20" y1="80" x2="{width - 20}" y2="80" stroke="#888"/>{bars}</svg>'
            "<table><tr><th>fold</th><th>OOS return</th><th>IS return</th><th>WFE</th>"
            f"<th>trades</th><th>error</th></tr>{rows}</table>"
            f"<h2>Promotion gate</h2><p>{'promoted' if gate.get('promoted') else 'not promoted'}"
            f": {html.escape('; '.join(gate.get('reasons', [gate.get('reason', '')])))}</p>")


def render_html(doc: dict[str, Any]) -> str:
    """The report as one HTML page with inline SVG (works offline, from a file)."""
    chart = doc.get("equity_chart", [])
    equity = _svg_line([(p["ts"], p["equity"]) for p in chart], 900, 220, "#1f6feb")
    drawdown = _svg_line([(p["ts"], -p["drawdown"] * 100) for p in chart], 900, 120, "#cf222e",
                         fill=True)
    metrics = "".join(_metric_html(k, v) for k, v in doc.get("metrics", {}).items())
    months = "".join(f"<tr><td>{m['month']}</td><td>{percent(m['return'], signed=True)}</td>"
                     "</tr>" for m in doc.get("monthly_returns", []))
    trades = doc.get("trades", [])
    rows = "".join(
        f"<tr><td>{ts_text(t['entry_ts'])}</td><td>{ts_text(t['exit_ts'])}</td>"
        f"<td>{t['side']}</td><td>{quantity(t['qty'])}</td><td>{price(t['entry_price'])}</td>"
        f"<td>{price(t['exit_price'])}</td><td>{money(t['pnl'], signed=True)}</td>"
        f"<td>{money(t['fees'])}</td><td>{html.escape(clip(t['exit_reason'], 90))}</td></tr>"
        for t in trades[:MAX_TRADES_SHOWN])
    more = (f"<p class=muted>{count(len(trades) - MAX_TRADES_SHOWN)} more trades in "
            "report.json</p>" if len(trades) > MAX_TRADES_SHOWN else "")
    extra = _folds_html(doc) if doc.get("kind") == "walkforward" else ""
    title = (f"{doc['kind']} {doc['symbol']} {doc['strategy']} "
             f"{ts_text(doc['start_ts'])} → {ts_text(doc['end_ts'])}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:13px system-ui,sans-serif;margin:24px;color:#1f2328}}
table{{border-collapse:collapse;margin:8px 0 20px}}td,th{{border:1px solid #d0d7de;
padding:3px 8px;text-align:left}}th{{background:#f6f8fa;font-weight:600}}
.muted{{color:#656d76}}h2{{margin-top:28px}}
.headline{{font-size:15px;font-weight:600;padding-left:20px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=muted>report {html.escape(doc['id'])} · model
 {html.escape(str(doc.get('model_version') or 'none'))}
 · overrides {html.escape(overrides_text(doc.get('overrides')))}
 · {html.escape(run_text(doc.get('run')))}</p>
{_headline_html(doc)}
<h2>Equity</h2>{equity}<h2>Drawdown (%)</h2>{drawdown}
{extra}
<h2>Metrics</h2><table>{metrics}</table>
<h2>Monthly returns</h2><table><tr><th>month</th><th>return</th></tr>{months}</table>
<h2>Trades ({count(len(trades))})</h2><table><tr><th>entry</th><th>exit</th><th>side</th>
<th>qty</th><th>entry price</th><th>exit price</th><th>P&amp;L</th><th>fees</th>
<th>exit reason</th></tr>
{rows}</table>{more}
</body></html>
"""
