"""``bdt data import|download|list``: market data into the store, and what it holds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli.render import parse_when, print_json, table, ts_text
from shared.cli.verbs import JSON, opt, verb
from shared.config import Config, symbol_problem


def _symbol(text: str) -> str:
    """``--symbol``, held to market.symbols' form (BASE/QUOTE)."""
    problem = symbol_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
    return text


SYMBOL = opt("--symbol", type=_symbol,
             help="market symbol (default: the first of market.symbols)")


def _print_report(report, as_json: bool) -> int:
    if as_json:
        print_json(report.to_dict())
        return 0
    print(f"{report.source}: {report.rows} rows, {report.added} added, {report.already_stored} "
          f"already stored, {report.rejected_count} rejected, {report.skipped_count} skipped "
          "(not candles)")
    if report.times:
        print(f"times read as {report.times}")
    if report.first_ts is not None:
        print(f"{report.symbol} {ts_text(report.first_ts)} … {ts_text(report.last_ts)} UTC")
    for word, named, total in (("rejected", report.rejected, report.rejected_count),
                               ("skipped", report.skipped, report.skipped_count)):
        for reason in named:
            print(f"  {word} {reason}")
        if total > len(named):
            print(f"  … and {total - len(named)} more {word}")
    return 0


@verb("data import", "import OHLCV candles from a file (exchange kline CSV, freqtrade JSON, "
                     "CSV, Parquet) into the market store; importing twice adds nothing",
      opt("file", type=Path), SYMBOL,
      opt("--date-format", metavar="FORMAT",
          help="strftime format of the file's time text, e.g. '%%m/%%d/%%Y %%H:%%M' (needed "
               "when day and month could be either way round)"), JSON)
def cmd_import(cfg: Config, args: argparse.Namespace) -> int:
    from shared.market.files import FeedError  # polars: only for the verbs that read files
    from shared.storage.bar_store import StoreError
    from shared.storage.importing import import_file

    try:
        report = import_file(cfg, args.file, args.symbol or cfg.get("market.symbols")[0],
                             args.date_format)
    except (FeedError, StoreError) as exc:
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
    from shared.storage.bar_store import StoreError
    from shared.storage.importing import download

    def progress(n: int, cursor: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{n} candles, up to {ts_text(cursor)} UTC", end="", file=sys.stderr)

    try:
        report = download(cfg, args.symbol or cfg.get("market.symbols")[0], args.since,
                          args.until, exchange_id=args.exchange, progress=progress)
    except (FeedError, StoreError) as exc:
        print(f"bdt data download: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return _print_report(report, args.json)


@verb("data list", "every stored symbol: bars, first and last bar, gaps", JSON)
def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    from shared.storage.importing import holdings

    rows = holdings(cfg)
    if args.json:
        print_json(rows)
        return 0
    table([[r["symbol"], r["bars"], ts_text(r["first_ts"]), ts_text(r["last_ts"]), r["gaps"],
            r["missing_bars"], r["largest_gap_bars"], ts_text(r["largest_gap_after_ts"])]
           for r in rows], ["symbol", "bars", "first (UTC)", "last (UTC)", "gaps", "missing",
                            "largest gap", "after (UTC)"])
    return 0
