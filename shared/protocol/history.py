"""The history service's ops: the rolling window and the whole market store."""

from __future__ import annotations

from shared.protocol.common import table
from shared.protocol.ops import Arg, Op

SYMBOL = Arg("symbol", str, "market symbol, e.g. BTC/USDT", cli="positional")
BARS = "{symbol, ts: [int], open, high, low, close, volume: [float], trades: [int]}"

OPS = table(
    "history",
    Op("latest", "the newest n bars of the rolling window, oldest first",
       (SYMBOL, Arg("n", int, "how many bars (at most the window)", cli="positional",
                    minimum=1)), BARS, verb="history latest"),
    Op("range", "bars with start ≤ ts < end from the whole store, at most history.range_max_rows"
                " a reply; truncated: ask again from the last ts + 1",
       (SYMBOL, Arg("start", int, "first bar time (epoch ms)", unit="ms"),
        Arg("end", int, "end, exclusive (epoch ms)", unit="ms"),
        Arg("limit", int, "at most this many bars", 10**9, minimum=1)),
       BARS[:-1] + ", truncated: bool}", verb="history range"),
    Op("symbols", "the symbols with a window", (), "[str]", verb="history symbols"),
)
