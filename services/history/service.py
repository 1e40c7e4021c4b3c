"""history: every closed bar from the `bars` stream, committed to the store before anything
else, a rolling window per symbol for `latest`, and `range` over the whole store.

PUB/SUB drops what a subscriber misses while it is down, so history closes gaps itself: when
a bar arrives more than one interval after the last stored one (or on the first bar), it asks
the bot — which keeps its recently published bars — for the missing ones (`bars_since`).

A corrupt Parquet partition does not stop it: the store moves the file aside and serves every
other day (shared.storage.bar_store); `status` lists what was quarantined.
"""

from __future__ import annotations

import time
from typing import Any

from services.history.window import RollingWindow
from shared.bus.client import BusClient, BusError
from shared.bus.service import Service
from shared.bus.streams import StreamMessage
from shared.config import Config
from shared.market.bars import Bar, bars_to_columns, columns_to_bars, timeframe_ms
from shared.market.gate import BarGate
from shared.protocol import errors, history
from shared.storage.bar_store import open_store


class HistoryService(Service):
    name = "history"
    summary = "rolling bar window and durable market-data store"
    streams_in = ("bars",)
    ops = history.OPS

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.timeframe = timeframe_ms(cfg.get("market.timeframe"))
        self.store = open_store(cfg)
        self.gate = BarGate(self.timeframe)
        self.windows: dict[str, RollingWindow] = {}
        self.received = self.stored = self.backfilled = 0
        self.gaps_open: dict[str, tuple[int, int]] = {}   # symbol -> (after_ts, before_ts)
        self.next_compaction = time.monotonic() + cfg.get("history.compact_interval_s")
        for symbol in {*cfg.get("market.symbols"), *self.store.symbols()}:
            self._window(symbol)

    def _window(self, symbol: str) -> RollingWindow:
        window = self.windows.get(symbol)
        if window is None:
            window = RollingWindow(symbol, self.cfg.get("history.window_bars"))
            for bar in self.store.recent(symbol, window.capacity):
                window.append(bar)
                self.gate.last_ts[symbol] = bar.ts
            self.windows[symbol] = window
        return window

    def _accept(self, bars: list[Bar]) -> int:
        """Gate, commit, then add to the window — in that order, so nothing unsaved is served."""
        good = []
        for bar in bars:
            problem = self.gate.check(bar)
            if problem:
                self.ignored(f"rejected {bar.symbol} bars",
                             f"rejected {bar.symbol} bar at {bar.ts}: {problem}")
            else:
                good.append(bar)
        self.stored += self.store.insert(good)
        for bar in good:
            self._window(bar.symbol).append(bar)
        return len(good)

    def _backfill(self, symbol: str, after: int, before: int) -> bool:
        """Fetch bars in (after, before) from the bot; False when it cannot answer now."""
        try:
            with BusClient("bot", self.cfg, timeout_ms=1000, retries=0) as bot:
                reply = bot.call("bars_since", symbol=symbol, after=after, before=before)
        except BusError as exc:
            self.log.warning("gap in %s after %d: bot cannot backfill now (%s)", symbol, after, exc)
            return False
        bars = columns_to_bars(reply)
        added = self._accept([b for b in bars if after < b.ts < before])
        self.backfilled += added
        if added:
            self.log.info("backfilled %d %s bars after %d", added, symbol, after)
        return True

    def on_stream(self, msg: StreamMessage) -> None:
        self.received += 1
        try:
            bar = Bar.from_dict(msg.fields)
        except (KeyError, TypeError, ValueError) as exc:
            self.ignored("malformed bar messages", f"dropped a malformed bar message: {exc}")
            return
        last = self._window(bar.symbol).last_ts()
        if last is None or bar.ts > last + self.timeframe:
            after = -1 if last is None else last
            if not self._backfill(bar.symbol, after, bar.ts) and last is not None:
                self.gaps_open[bar.symbol] = (after, bar.ts)
        self._accept([bar])

    def tick(self) -> None:
        self.store.checkpoint()
        for symbol, (after, before) in list(self.gaps_open.items()):
            if self._backfill(symbol, after, before):
                del self.gaps_open[symbol]
        if time.monotonic() >= self.next_compaction:
            for symbol in self.store.symbols():
                moved = self.store.compact(symbol, self.cfg.get("history.compact_keep_days"))
                if moved:
                    self.log.info("compacted %d %s bars into Parquet", moved, symbol)
            self.next_compaction = time.monotonic() + self.cfg.get("history.compact_interval_s")

    def close(self) -> None:
        self.store.close()

    def service_status(self) -> dict[str, Any]:
        return {
            "received": self.received, "stored": self.stored, "backfilled": self.backfilled,
            "rejected": self.gate.rejected, "open_gaps": len(self.gaps_open),
            "symbols": {s: {"window": w.size, "last_ts": w.last_ts(), "window_bytes": w.nbytes}
                        for s, w in self.windows.items()},
            "store_bytes": self.store.size_bytes(),
            "quarantined": self.store.quarantined,    # corrupt partitions moved aside
        }

    # --- ops -------------------------------------------------------------------------------
    def _symbol(self, args: dict[str, Any]) -> str:
        symbol = args["symbol"]
        if symbol not in self.windows and symbol not in self.store.symbols():
            raise errors.MessageError(errors.BAD_ARGS, f"unknown symbol {symbol!r}; known: "
                                     f"{', '.join(sorted(self.windows))}")
        return symbol

    def op_latest(self, args: dict[str, Any]) -> dict[str, Any]:
        """The newest ``n`` bars (≤ the window), columnar."""
        symbol = self._symbol(args)
        return bars_to_columns(symbol, self._window(symbol).latest(args["n"]))

    def op_range(self, args: dict[str, Any]) -> dict[str, Any]:
        """Bars with start ≤ ts < end from the whole store, at most range_max_rows a reply;
        ``truncated`` says to ask again with start = the last ts + 1."""
        symbol = self._symbol(args)
        limit = min(args["limit"], self.cfg.get("history.range_max_rows"))
        df = self.store.collect(symbol, args["start"], args["end"],
                                then=lambda lazy: lazy.head(limit + 1))
        bars = [Bar(symbol, *row) for row in df.head(limit).iter_rows()]
        return {**bars_to_columns(symbol, bars), "truncated": df.height > limit}

    def op_symbols(self, args: dict[str, Any]) -> list[str]:
        return sorted(self.windows)
