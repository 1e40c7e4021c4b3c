"""The bot's ops: operator control and the trading record."""

from __future__ import annotations

from shared.protocol.common import table
from shared.protocol.history import BARS
from shared.protocol.ops import Arg, Op

TRADING = ("{position, cash, equity, today_pnl, risk, trading_blocked, orders_not_final, "
           "exchange_balance, fees_excluded, pnl_note}")


def since(what: str) -> Arg:
    return Arg("since", int, f"only {what} at or after this time (epoch ms)", 0, minimum=0,
               unit="ms")


def limit(default: int) -> Arg:
    return Arg("limit", int, "at most this many, the newest", default, minimum=1)


OPS = table(
    "bot",
    Op("pause", "open no new positions (exits still run)", (), TRADING, verb="bot pause"),
    Op("resume", "allow new positions again", (), TRADING, verb="bot resume"),
    Op("flatten", "close the position now at the last price", (),
       "{flattened: bool, ...trading}", verb="bot flatten", idempotent=False),
    Op("trades", "fills, oldest first", (since("fills"), limit(1000)),
       "[{ts, client_id, symbol, side, qty, price, fee, liquidity, realized_pnl, reason, "
       "fee_asset, fee_asset_qty, fee_asset_value, note}]",
       verb="trades"),
    Op("equity", "equity snapshots, oldest first", (since("snapshots"), limit(10_000)),
       "[{ts, equity, cash, position_value}]", verb="equity"),
    Op("decisions", "every bar's decision with its reason, oldest first",
       (since("decisions"), limit(1000)),
       "[{bar_ts, close, action, target_qty, reason, prediction}]", verb="decisions"),
    Op("bars_since", "published bars with after < ts < before",
       (Arg("symbol", str, "market symbol"), Arg("after", int, "exclusive (epoch ms)"),
        Arg("before", int, "exclusive (epoch ms)", 2**62)),
       BARS, internal="history's gap backfill asks the bot for the bars it missed"),
)
