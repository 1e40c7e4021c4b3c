"""Backtest reports: ``<reports>/<run-id>/report.json`` (everything, machine-readable) and a
self-contained ``report.html`` (inline SVG charts, no script, no network): equity and
drawdown, the metrics, monthly returns, the trades. ``list_reports`` and ``load_report`` are
what ``bdt reports`` and the dashboard read."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import secrets
from pathlib import Path
from typing import Any

from shared.backtest.runner import BacktestResult

REPORT_JSON, REPORT_HTML = "report.json", "report.html"
MAX_TRADES_SHOWN = 500          # in the HTML; the JSON has all


def new_run_id(kind: str, strategy: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{kind}-{strategy}-{secrets.token_hex(2)}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def result_document(result: BacktestResult, run_id: str, kind: str = "backtest"
                    ) -> dict[str, Any]:
    spec = result.spec
    return {
        "id": run_id, "kind": kind, "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "symbol": spec.symbol, "start_ts": spec.start_ts, "end_ts": spec.end_ts,
        "strategy": result.strategy, "model_version": result.model_version,
        "overrides": spec.overrides, "label": spec.label, "settings": result.settings,
        "metrics": result.metrics, "monthly_returns": result.monthly, "run": result.run,
        "trades": [t.to_dict() for t in result.trades], "equity_chart": result.chart,
    }


def write_report(doc: dict[str, Any], reports_dir: Path) -> Path:
    """Write report.json and report.html for ``doc``; the report's directory."""
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


# --- HTML -----------------------------------------------------------------------------------
def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, dict) and "withheld" in value:
        return f"<span class=muted>withheld: {html.escape(value['withheld'])}</span>"
    if isinstance(value, dict):
        return html.escape(", ".join(f"{k}: {v}" for k, v in value.items()) or "none")
    if value is None:
        return "-"
    if key.endswith("_ts"):
        return _when(value)
    if isinstance(value, float):
        pct = ("return", "drawdown", "exposure", "win_rate", "volatility")
        if any(p in key for p in pct) and not key.endswith(("_days", "_min")):
            return f"{value * 100:.2f} %"
        return f"{value:,.4f}"
    return html.escape(str(value))


def _svg_line(points: list[tuple[float, float]], width: int, height: int, color: str,
              fill: bool = False) -> str:
    if len(points) < 2:
        return f'<svg width="{width}" height="{height}"></svg>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    coords = " ".join(f"{(x - x0) / span_x * (width - 60) + 55:.1f},"
                      f"{height - 20 - (y - y0) / span_y * (height - 30):.1f}" for x, y in points)
    shape = (f'<polygon points="55,{height - 20} {coords} {width - 5},{height - 20}" '
             f'fill="{color}" fill-opacity="0.25" stroke="none"/>' if fill else "")
    return (f'<svg width="{width}" height="{height}" role="img">{shape}'
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.2"/>'
            f'<text x="2" y="12" font-size="10">{y1:,.4g}</text>'
            f'<text x="2" y="{height - 22}" font-size="10">{y0:,.4g}</text>'
            f'<text x="55" y="{height - 5}" font-size="10">{_when(int(x0))}</text>'
            f'<text x="{width - 120}" y="{height - 5}" font-size="10">{_when(int(x1))}</text>'
            "</svg>")


def render_html(doc: dict[str, Any]) -> str:
    """The report as one HTML page with inline SVG (works offline, from a file)."""
    chart = doc.get("equity_chart", [])
    equity = _svg_line([(p["ts"], p["equity"]) for p in chart], 900, 220, "#1f6feb")
    drawdown = _svg_line([(p["ts"], -p["drawdown"] * 100) for p in chart], 900, 120, "#cf222e",
                         fill=True)
    metrics = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(k, v)}</td></tr>"
                      for k, v in doc.get("metrics", {}).items())
    months = "".join(f"<tr><td>{m['month']}</td><td>{_fmt('return', m['return'])}</td></tr>"
                     for m in doc.get("monthly_returns", []))
    trades = doc.get("trades", [])
    rows = "".join(
        f"<tr><td>{_when(t['entry_ts'])}</td><td>{_when(t['exit_ts'])}</td><td>{t['side']}</td>"
        f"<td>{t['qty']:.6g}</td><td>{t['entry_price']:.2f}</td><td>{t['exit_price']:.2f}</td>"
        f"<td>{t['pnl']:+.2f}</td><td>{t['fees']:.2f}</td>"
        f"<td>{html.escape(t['exit_reason'][:90])}</td></tr>" for t in trades[:MAX_TRADES_SHOWN])
    more = (f"<p class=muted>{len(trades) - MAX_TRADES_SHOWN} more trades in report.json</p>"
            if len(trades) > MAX_TRADES_SHOWN else "")
    extra = doc.get("html_extra", "")
    title = (f"{doc['kind']} {doc['symbol']} {doc['strategy']} "
             f"{_when(doc['start_ts'])} → {_when(doc['end_ts'])}")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:13px system-ui,sans-serif;margin:24px;color:#1f2328}}
table{{border-collapse:collapse;margin:8px 0 20px}}td,th{{border:1px solid #d0d7de;
padding:3px 8px;text-align:left}}th{{background:#f6f8fa;font-weight:600}}
.muted{{color:#656d76}}h2{{margin-top:28px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=muted>report {html.escape(doc['id'])} · model {html.escape(str(doc.get('model_version')))}
 · overrides {html.escape(json.dumps(doc.get('overrides', {})))}
 · {doc.get('run', {}).get('wall_s', '-')} s, peak
 {(doc.get('run', {}).get('peak_bytes') or 0) >> 20} MiB</p>
<h2>Equity</h2>{equity}<h2>Drawdown (%)</h2>{drawdown}
{extra}
<h2>Metrics</h2><table>{metrics}</table>
<h2>Monthly returns</h2><table><tr><th>month</th><th>return</th></tr>{months}</table>
<h2>Trades ({len(trades)})</h2><table><tr><th>entry</th><th>exit</th><th>side</th><th>qty</th>
<th>entry price</th><th>exit price</th><th>P&amp;L</th><th>fees</th><th>exit reason</th></tr>
{rows}</table>{more}
</body></html>
"""
