"""``bdt backtest`` and ``bdt reports list|show|open``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from shared.cli.render import parse_when, print_json, table, ts_text
from shared.cli.verbs import JSON, opt, verb
from shared.config import CHOICES, Config, ConfigError
from shared.formatting import count, duration, money, number, percent


def _progress(started: float):
    def show(done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        width = 30
        filled = int(width * done / total) if total else width
        rate = done / max(time.perf_counter() - started, 1e-9)
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} bars "
              f"({rate:,.0f} bars/s)", end="", file=sys.stderr, flush=True)
    return show


def parse_sets(items: list[str]) -> dict[str, str]:
    """``--set strategy.entry_threshold=0.0003`` → {"strategy.entry_threshold": "0.0003"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        out[key.strip()] = value.strip()
    return out


@verb("backtest", "run the trading engine over stored bars and write a report",
      opt("--from", dest="start", type=parse_when, help="epoch ms or ISO date (UTC)"),
      opt("--to", dest="end", type=parse_when, help="exclusive; default: see backtest.window_days"),
      opt("--symbol", help="default: the first of market.symbols"),
      opt("--strategy", choices=CHOICES["strategy.name"], help="default: strategy.name"),
      opt("--model", help="model version (default: the promoted one)"),
      opt("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
          help="change a setting for this run (repeatable)"),
      opt("--parity", metavar="DAY", type=parse_when,
          help="compare a day the live bot traded with its backtest, decision by decision"),
      opt("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2,…",
          help="run every combination of these values (repeatable); counted as trials"),
      JSON)
def cmd_backtest(cfg: Config, args: argparse.Namespace) -> int:
    if args.parity is not None:
        return _parity(cfg, args)
    if args.grid:
        return _grid(cfg, args)
    from shared.backtest.jobs import run_and_report
    from shared.backtest.runner import BacktestSpec

    try:
        symbol, overrides, start, end = _inputs(cfg, args)
        spec = BacktestSpec(symbol, start, end, overrides, args.model)
        doc, folder = run_and_report(cfg, spec, progress=_progress(time.perf_counter()))
    except run_errors() as exc:
        return _failed("bdt backtest", exc)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print_json({"id": doc["id"], "path": str(folder), "metrics": doc["metrics"],
                    "run": doc["run"]})
        return 0
    m = doc["metrics"]
    print(f"{doc['id']}: {symbol} {doc['strategy']} {ts_text(start)} → {ts_text(end)}, "
          f"{count(m['bars'])} bars in {duration(doc['run']['wall_s'])}")
    for line in doc.get("headline") or []:
        print(line)
    print(f"return {percent(m['total_return'], signed=True)}  (buy & hold "
          f"{percent(m['buy_and_hold_return'], signed=True)})  max drawdown "
          f"{percent(m['max_drawdown'])}  trades {count(m['trades'])}  "
          f"fees {money(m['fees_paid'])}")
    print(f"report: {folder / 'report.html'}")
    return 0


def run_errors() -> tuple[type[Exception], ...]:
    """What a backtest run raises for bad input (nothing stored, no model, over the cap):
    said in one line, no traceback. Imported when a run is asked for, not with every verb."""
    from shared.backtest.memory import MemoryExhausted
    from shared.models.artifacts import ModelError

    return ValueError, ModelError, MemoryExhausted


def _failed(command: str, exc: Exception) -> int:
    if sys.stderr.isatty():
        print(file=sys.stderr)               # after the progress line
    print(f"{command}: {exc}", file=sys.stderr)
    return 1


def _inputs(cfg: Config, args: argparse.Namespace) -> tuple[str, dict[str, str], int, int]:
    """(symbol, overrides, start ms, end ms) of a backtest: --set and --strategy as overrides,
    the default range (backtest.window_days) for a missing --from or --to. ValueError when
    nothing of the symbol is stored."""
    from shared.backtest.jobs import default_range, trained_to_ts

    symbol = args.symbol or cfg.get("market.symbols")[0]
    overrides = parse_sets(args.sets)
    if args.strategy:
        overrides["strategy.name"] = args.strategy
    start, end = args.start, args.end
    if start is None or end is None:
        d_start, d_end = default_range(cfg, symbol,
                                       trained_to_ts(cfg, overrides.get("strategy.name")))
        start, end = start if start is not None else d_start, end or d_end
    return symbol, overrides, start, end


def _grid(cfg: Config, args: argparse.Namespace) -> int:
    """Every combination of the --grid values, side by side; each counts as a trial for the
    walk-forward gate's deflated Sharpe ratio."""
    import itertools

    from shared.backtest.jobs import record_trials, run_and_report
    from shared.backtest.runner import BacktestSpec

    axes = []
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or "." not in key or not values:
            raise ConfigError(f"--grid {item!r}: expected section.key=v1,v2,…")
        axes.append([(key.strip(), v.strip()) for v in values.split(",")])
    rows, combos = [], []
    try:
        symbol, base, start, end = _inputs(cfg, args)
        combos = [{**base, **dict(c)} for c in itertools.product(*axes)]
        for combo in combos:
            doc, _ = run_and_report(cfg, BacktestSpec(symbol, start, end, combo, args.model))
            m = doc["metrics"]
            rows.append({"id": doc["id"], "settings": combo, "total_return": m["total_return"],
                         "max_drawdown": m["max_drawdown"], "trades": m["trades"],
                         "sharpe": m["sharpe"]})
    except run_errors() as exc:
        return _failed("bdt backtest --grid", exc)
    finally:
        if rows:
            record_trials(cfg, combos[:len(rows)])       # the trials that did run count
    if args.json:
        print_json(rows)
        return 0
    keys = [axis[0][0] for axis in axes]
    table([[*(r["settings"][k] for k in keys), percent(r["total_return"], signed=True),
            percent(r["max_drawdown"]), count(r["trades"]), r["id"]] for r in rows],
          [*keys, "return", "max dd", "trades", "report"])
    return 0


@verb("walkforward", "walk-forward over the stored bars, the promotion gate, a report",
      opt("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
          help="change a setting for this run (repeatable)"), JSON)
def cmd_walkforward(cfg: Config, args: argparse.Namespace) -> int:
    from shared.backtest.jobs import run_walkforward
    from shared.backtest.runner import with_overrides
    from shared.backtest.walkforward import WalkForwardError

    overrides = parse_sets(args.sets)
    try:
        run_cfg = with_overrides(cfg, overrides)
        doc, folder = run_walkforward(run_cfg, run_cfg.get("market.symbols")[0])
    except (ValueError, WalkForwardError) as exc:
        print(f"bdt walkforward: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json({"id": doc["id"], "path": str(folder), "metrics": doc["metrics"],
                    "gate": doc["gate"], "folds": doc["folds"]})
        return 0
    m, gate = doc["metrics"], doc["gate"]
    print(f"{doc['id']}: {m['folds']} folds ({m['failed']} failed), out of sample "
          f"{percent(m['oos_total_return'], signed=True)} over {count(m['trades'])} trades, "
          f"walk-forward efficiency {number(m['walk_forward_efficiency'])}")
    print(f"gate: {'PROMOTED' if gate.get('promoted') else 'not promoted'} "
          f"{gate.get('challenger_version', '')}: "
          f"{'; '.join(gate.get('reasons', [gate.get('reason', '')]))}")
    print(f"report: {folder / 'report.html'}")
    return 0


def _parity(cfg: Config, args: argparse.Namespace) -> int:
    from shared.backtest.parity import ParityError, check_parity
    from shared.models.artifacts import ModelError

    symbol = args.symbol or cfg.get("market.symbols")[0]
    try:
        report = check_parity(cfg, args.parity, symbol)
    except (ParityError, ModelError, ValueError) as exc:
        print(f"bdt backtest --parity: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json(report.to_dict())
    else:
        print(f"{symbol} {ts_text(report.day_start)[:10]}: {report.compared} decisions "
              f"compared, {len(report.differences)} differ (model {report.model_version})")
        for note in report.notes:
            print(f"note: {note}")
        for d in report.differences[:50]:
            live, ours = d["live"] or {}, d["backtest"] or {}
            print(f"{ts_text(d['bar_ts'])}  {d['why']}\n  live:     {live.get('action', '-')} "
                  f"{live.get('target_qty', '')}  {live.get('reason', '')[:100]}\n"
                  f"  backtest: {ours.get('action', '-')} {ours.get('target_qty', '')}  "
                  f"{ours.get('reason', '')[:100]}")
    return 0 if report.equal else 3


@verb("reports list", "every report, newest first", JSON)
def cmd_reports_list(cfg: Config, args: argparse.Namespace) -> int:
    from shared.backtest.report import list_reports

    rows = list_reports(cfg.reports_dir)
    if args.json:
        print_json(rows)
        return 0
    table([[r["id"], r.get("strategy") or "-", r.get("symbol") or "-",
            ts_text(r.get("start_ts")), ts_text(r.get("end_ts")),
            percent(r.get("total_return"), signed=True), count(r.get("trades"))]
           for r in rows],
          ["id", "strategy", "symbol", "from", "to", "return", "trades"])
    return 0


@verb("reports show", "one report: its headline, positions open at the end, metrics",
      opt("id"), JSON)
def cmd_reports_show(cfg: Config, args: argparse.Namespace) -> int:
    from shared.backtest.report import load_report

    try:
        doc = load_report(cfg.reports_dir, args.id)
    except FileNotFoundError as exc:
        print(f"bdt reports show: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print_json(doc)
        return 0
    print_report(doc)
    return 0


def print_report(doc: dict[str, Any]) -> None:
    """What ran; the headline and the positions open at the end (when the report has them);
    every metric as people read it."""
    from shared.backtest.report import (
        OPEN_POSITION_HEADER,
        metric_rows,
        open_position_cells,
        overrides_text,
        run_text,
    )

    print(f"{doc['id']}: {doc.get('kind')} {doc.get('symbol')} {doc.get('strategy')} "
          f"{ts_text(doc.get('start_ts'))} → {ts_text(doc.get('end_ts'))}")
    print(f"model {doc.get('model_version') or 'none'} · overrides "
          f"{overrides_text(doc.get('overrides'))} · {run_text(doc.get('run'))}")
    for line in doc.get("headline") or []:
        print(f"» {line}")
    positions = doc.get("open_positions") or []
    if positions:
        print("open at the end:")
        table([open_position_cells(p) for p in positions], OPEN_POSITION_HEADER)
    print()
    table([list(row) for row in metric_rows(doc.get("metrics") or {})], ["metric", "value"])


@verb("reports open", "the path of a report's HTML page (open it in a browser)", opt("id"))
def cmd_reports_open(cfg: Config, args: argparse.Namespace) -> int:
    path = cfg.reports_dir / args.id / "report.html"
    if not path.is_file():
        print(f"bdt reports open: no report {args.id!r} in {cfg.reports_dir}", file=sys.stderr)
        return 1
    print(path)
    return 0
