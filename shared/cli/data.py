"""``bdt data import|download|list``: market data into the store, and what it holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli.render import parse_when, print_json, table, ts_text
from shared.cli.verbs import JSON, opt, verb
from shared.config import Config

SYMBOL = opt("--symbol", help="market symbol (default: the first of market.symbols)")


def _print_report(report, as_json: bool) -> int:
    if as_json:
        print_json(report.to_dict())
        return 0
    print(f"{report.source}: {report.rows} rows, {report.added} added, {report.already_stored} "
          f"already stored, {report.rejected_count} rejected")
    if report.first_ts is not None:
        print(f"{report.symbol} {ts_text(report.first_ts)} … {ts_text(report.last_ts)}")
    for reason in report.rejected:
        print(f"  rejected {reason}")
    if report.rejected_count > len(report.rejected):
        print(f"  … and {report.rejected_count - len(report.rejected)} more")
    return 0


@verb("data import", "import OHLCV candles from a file (exchange kline CSV, freqtrade JSON, "
                     "CSV, Parquet) into the market store; importing twice adds nothing",
      opt("file", type=Path), SYMBOL, JSON)
def cmd_import(cfg: Config, args: argparse.Namespace) -> int:
    from shared.market.files import FeedError  # polars: only for the verbs that read files
    from shared.market.importing import import_file

    try:
        report = import_file(cfg, args.file, args.symbol or cfg.get("market.symbols")[0])
    except FeedError as exc:
        print(f"bdt data import: {exc}", file=sys.stderr)
        return 1
    return _print_report(report, args.json)


@verb("data download", "fetch candles through the exchange's REST API (ccxt fetch_ohlcv) "
                       "into the market store",
      opt("--since", type=parse_when, required=True, help="epoch ms or ISO date (UTC)"),
      opt("--until", type=parse_when, help="exclusive; default now"),
      opt("--exchange", help="ccxt exchange id (default market.exchange)"), SYMBOL, JSON)
def cmd_download(cfg: Config, args: argparse.Namespace) -> int:
    from shared.market.files import FeedError
    from shared.market.importing import download

    def progress(n: int, cursor: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{n} candles, up to {ts_text(cursor)}", end="", file=sys.stderr)

    try:
        report = download(cfg, args.symbol or cfg.get("market.symbols")[0], args.since,
                          args.until, exchange_id=args.exchange, progress=progress)
    except FeedError as exc:
        print(f"bdt data download: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return _print_report(report, args.json)


@verb("data list", "every stored symbol: bars, first and last bar, gaps", JSON)
def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    from shared.market.importing import holdings

    rows = holdings(cfg)
    if args.json:
        print_json(rows)
        return 0
    table([[r["symbol"], r["bars"], ts_text(r["first_ts"]), ts_text(r["last_ts"]), r["gaps"],
            r["missing_bars"], r["largest_gap_bars"], ts_text(r["largest_gap_after_ts"])]
           for r in rows], ["symbol", "bars", "first", "last", "gaps", "missing", "largest gap",
                            "after"])
    return 0
