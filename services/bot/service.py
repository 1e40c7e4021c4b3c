"""bot: runs the market feed, publishes each closed bar, waits (bounded) for that bar's
prediction, then strategy → risk → orders → durable record (shared.trading.engine).

The feed (replay pacing, live websocket) runs in its own thread and hands bars to the
service loop over an inproc socket, one at a time: the next bar is released only when the
previous one is decided, so a fast replay is the live system at full speed, never a pile-up.
Every bus socket stays in the one thread that owns it.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from services.bot.feed_thread import FeedThread
from services.bot.snapshot import SnapshotWriter
from shared.bus import codec
from shared.bus.service import Service, percentiles
from shared.bus.streams import StreamMessage
from shared.config import Config, ConfigError, exchange_options
from shared.market.bars import Bar, bars_to_columns, timeframe_ms, utc
from shared.market.feeds import open_feed
from shared.market.files import FeedError
from shared.market.gate import BarGate
from shared.models.registry import ModelRegistry
from shared.protocol import bot, cache_keys, errors
from shared.protocol.alerts import raise_alert
from shared.protocol.events import EventError, parse_event
from shared.storage.bar_store import StoreError, newest_ts
from shared.storage.trading_state import StateError, TradingDB
from shared.trading.engine import TradingEngine
from shared.trading.types import Prediction


def live_broker(cfg: Config, symbol: str):
    """The live broker, only with bot.mode = "live" and a keys file (checked before use), with
    ``market.exchange_options`` (e.g. ``{"options": {"recvWindow": 10000,
    "adjustForTimeDifference": true}}``, ``"timeout"`` in ms) and the ``[bot]`` settings of the
    order path."""
    if not cfg.get("bot.keys_file"):
        raise ConfigError("bot.keys_file: required when bot.mode = 'live'")
    from shared.trading.broker_live import BrokerConfigError, LiveBroker

    try:
        return LiveBroker(cfg.get("market.exchange"), symbol, Path(cfg.get("bot.keys_file")),
                          exchange_options=exchange_options(cfg),
                          ack_lookups=cfg.get("bot.ack_lookups"),
                          ack_lookup_delay_s=cfg.get("bot.ack_lookup_delay_s"),
                          fill_lookups=cfg.get("bot.fill_lookups"),
                          lost_after_s=cfg.get("bot.lost_order_s"))
    except BrokerConfigError as exc:
        raise ConfigError(f"bot.keys_file: {exc}") from None


class BotService(Service):
    name = "bot"
    summary = "feed, bars, strategy, risk and paper/live execution"
    publishes = True
    streams_in = ("predictions", "events")
    tick_interval_s = 0.05
    ops = bot.OPS

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.symbol = cfg.get("market.symbols")[0]
        self.timeframe = timeframe_ms(cfg.get("market.timeframe"))
        self.wait_s = cfg.get("bot.prediction_wait_ms") / 1000
        self.gate = BarGate(self.timeframe)
        self.recent: collections.deque[Bar] = collections.deque(maxlen=cfg.get("bot.recent_bars"))
        self.registry = ModelRegistry(cfg.model_dir)
        self.published = self.decided = self.bad_predictions = self.without_prediction = 0
        self.last_bar: Bar | None = None
        self.last_prediction: dict[str, Any] | None = None
        self.last_decision: dict[str, Any] | None = None
        self.pending: tuple[Bar, float] | None = None      # bar awaiting its prediction
        self.next_checkpoint = 0.0
        self.next_snapshot = 0.0
        self.snapshot = SnapshotWriter(cfg)
        self.snapshot.start()
        self.prediction_us = self.timing("bar_to_prediction")
        self.decision_us = self.timing("bar_to_decision")
        self.record_us = self.timing("decision_to_record")
        self.state_error: str | None = None
        self.engine: TradingEngine | None = None
        try:
            broker = live_broker(cfg, self.symbol) if cfg.get("bot.mode") == "live" else None
            self.db = TradingDB(cfg.var_dir / "data" / "trading.db")
            self.engine = TradingEngine(cfg, self.db, self.symbol, self.timeframe, broker)
        except StateError as exc:
            self.state_error = str(exc)
            self.log.error("not trading: %s", exc)
        # a replay or synthetic feed starts after the newest stored bar, which it reads from
        # the store itself when it starts (shared/market/feeds.py), whether history is up or not
        self.feed = open_feed(cfg, self.symbol, stored_until=self._store_end)
        self.log.info("%s trading, feed %s for %s", cfg.get("bot.mode"), self.feed.name,
                      self.symbol)
        self.go = threading.Event()
        self.wait_started = time.monotonic()
        address = f"inproc://feed-{id(self)}"
        self.inbox = zmq.Context.instance().socket(zmq.PAIR)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(address)
        self.feed_thread = FeedThread(self.feed, address, self.go)
        if self.engine is not None:      # a corrupt state database: no feed, nothing traded
            self.feed_thread.start()

    def extra_sockets(self):
        return [(self.inbox, self._on_feed_bar)]

    # --- bars and predictions --------------------------------------------------------------
    def _on_feed_bar(self) -> None:
        bar = Bar.from_dict(codec.unpack(self.inbox.recv()))
        problem = self.gate.check(bar)
        if problem:
            self.ignored("rejected feed bars", f"feed bar at {utc(bar.ts)}: {problem}")
            self.feed_thread.ready.set()
            return
        self.publish("bars", bar.to_dict())
        self.recent.append(bar)
        self.published += 1
        self.last_bar = bar
        self.pending = (bar, time.perf_counter())

    def _store_end(self) -> int | None:
        """Where the market store ends for the bot's symbol, read when the feed starts (not
        through history, which may start later); FeedError when it cannot be read."""
        try:
            return newest_ts(self.cfg, self.symbol)
        except StoreError as exc:
            raise FeedError(f"cannot tell where the stored bars end: {exc}") from None

    def on_stream(self, msg: StreamMessage) -> None:
        if msg.stream == "events":
            self._on_event(msg.fields)
            return
        if "skipped" in msg.fields:           # the predictor cannot predict this bar
            if self.pending and msg.fields.get("bar_time") == self.pending[0].ts:
                self._decide(None, note=f"no prediction: {msg.fields['skipped']}")
            return
        try:
            prediction = Prediction.from_dict(msg.fields)
        except ValueError as exc:
            self.bad_predictions += 1
            self.ignored("malformed predictions", str(exc))
            return
        self.last_prediction = msg.fields
        if self.pending and prediction.bar_time == self.pending[0].ts:
            # bar published → its prediction received, through the bus both ways
            self.prediction_us.append((time.perf_counter() - self.pending[1]) * 1e6)
            self._decide(prediction)

    def _on_event(self, fields: dict[str, Any]) -> None:
        try:
            kind, fields = parse_event(fields)
        except EventError as exc:
            self.ignored("malformed events", str(exc))
            return
        if kind == "mode" and self.engine is not None:
            if fields["mode"] != self.engine.risk.state.mode:    # re-announced every minute
                self.log.info("resource mode is now %s", fields["mode"])
            self.engine.risk.set_mode(fields["mode"])

    def tick(self) -> None:
        if self.pending and time.perf_counter() - self.pending[1] > self.wait_s:
            self._decide(None, note=f"no prediction within {self.wait_s * 1000:.0f} ms")
        if self.engine is not None and not self.pending:
            try:        # orders not final and the exchange's balances (live); paper: nothing
                self.engine.tick()
            except Exception:
                self.log.exception("order and balance check failed; retried next tick")
            self._publish_alerts()
            self._checkpoint_when_due()
            self._snapshot_when_due()   # between bars too: 1m bars outlast the snapshot's TTL
        if not self.go.is_set() and self.publisher is not None:
            wanted = self.cfg.get("bot.wait_subscribers")
            have = self.publisher.subscribers("bars")
            waited = time.monotonic() - self.wait_started
            if have >= wanted or waited > self.cfg.get("bot.wait_subscribers_timeout_s"):
                log = self.log.info if have >= wanted else self.log.warning
                log("%d of %d bar subscriber(s) after %.1f s: starting the feed", have, wanted,
                    waited)
                self.go.set()

    def _decide(self, prediction: Prediction | None, note: str = "") -> None:
        assert self.pending is not None and self.engine is not None
        bar, published_at = self.pending
        self.pending = None
        decision = None
        try:
            planned = self.engine.decide(bar, prediction, time.perf_counter() - published_at,
                                         self.registry.current(), note)
            decided_at = time.perf_counter()
            if planned is not None:
                decision = self.engine.execute(bar, *planned, prediction)
        except Exception:
            self.log.exception("decision for bar %d failed; nothing traded on it", bar.ts)
            planned = None
        finally:
            self.feed_thread.ready.set()
        if prediction is not None and planned is not None:
            # bar → prediction → decision (strategy and risk), and apart from it the
            # execution: order, fills and the durable record (fsynced when money moved)
            self.decision_us.append((decided_at - published_at) * 1e6)
            self.record_us.append((time.perf_counter() - decided_at) * 1e6)
        elif prediction is None:
            self.without_prediction += 1
        self._publish_alerts()
        if decision is not None:
            self.decided += 1
            self.last_decision = vars(decision) | {"fills": [f.to_dict() for f in decision.fills]}
            if decision.action != "hold":
                self.log.info("bar %d: %s %.5f (%s)", bar.ts, decision.action, decision.qty,
                              decision.reason)
        self._checkpoint_when_due()     # the next bar is not published before this returns
        self._snapshot_when_due()

    def _publish_alerts(self) -> None:
        """The engine's alerts raised (``raise_alert``: the monitor stores and sends them)."""
        if self.engine is None or not self.engine.alerts:
            return
        alerts, self.engine.alerts = self.engine.alerts, []
        for alert in alerts:
            self.log.error("alert %s: %s", alert["alert"], alert["message"])
            if self.publisher is not None:
                raise_alert(self, alert["alert"], "bot", alert["message"],
                            severity=alert["severity"], **alert["figures"])

    def _checkpoint_when_due(self) -> None:
        """At most once a second, between bars. A decision checkpoints too, not only an idle
        tick: replaying as fast as it goes the bot is rarely idle at a tick, and the WAL then
        grew by ~17 MiB a second to 100 MiB of page cache between checkpoints."""
        now = time.monotonic()
        if now >= self.next_checkpoint:
            self.next_checkpoint = now + 1.0        # first: a failing one is not retried at once
            note = self.db.reopen_if_replaced()     # deleted or replaced under the bot?
            if note:
                self.log.error("%s", note)
            self.db.checkpoint()

    def _snapshot_when_due(self) -> None:
        """At most once a second: the latest bar, prediction, position, equity and risk state
        into the cache (services/bot/snapshot.py)."""
        now = time.monotonic()
        if now < self.next_snapshot or self.engine is None:
            return
        self.next_snapshot = now + 1.0
        trading = self._trading_status()
        self.snapshot.offer({
            cache_keys.BOT_LAST_BAR.name: self.last_bar.to_dict() if self.last_bar else None,
            cache_keys.BOT_PREDICTION.name: self.last_prediction,
            cache_keys.BOT_POSITION.name: trading.get("position"),
            cache_keys.BOT_EQUITY.name: {k: trading.get(k)
                                         for k in ("equity", "cash", "today_pnl")},
            cache_keys.BOT_RISK.name: trading.get("risk")})

    # --- lifecycle and status --------------------------------------------------------------
    def close(self) -> None:
        self.snapshot.stop()
        self.feed_thread.stop_flag.set()
        self.go.set()
        if self.feed_thread.is_alive():
            self.feed_thread.join(2)
        self.inbox.close(linger=0)
        if self.engine is not None:
            self.db.close()
            self.engine.broker.close()

    def _trading_status(self) -> dict[str, Any]:
        t = self.engine
        if t is None:
            return {"error": self.state_error}
        p = t.position
        excluded = ", ".join(f"{qty:g} {asset}" for asset, qty in t.fees_excluded.items())
        return {
            "position": {"symbol": p.symbol, "qty": p.qty, "avg_price": p.avg_price,
                         "opened_ts": p.opened_ts, "realized_pnl": p.realized_pnl},
            "cash": t.cash, "equity": t.equity(), "today_pnl": t.today_pnl(),
            "risk": t.risk.state.to_dict(),
            # why opening is refused beyond the risk rules (book ≠ exchange), or None
            "trading_blocked": t.blocked,
            "orders_not_final": [{k: o[k] for k in ("client_id", "side", "qty", "status")}
                                 for o in t.pending.values()],
            "exchange_balance": t.exchange_balance.to_dict() if t.exchange_balance else None,
            "fees_excluded": dict(t.fees_excluded),
            "pnl_note": f"P&L excludes fees paid in assets without a price: {excluded}"
            if excluded else None,
        }

    def service_status(self) -> dict[str, Any]:
        return {
            "mode": self.cfg.get("bot.mode"), "feed": self.feed.name, "symbol": self.symbol,
            "started": self.go.is_set(), "feed_finished": self.feed_thread.finished,
            "feed_error": self.feed_thread.error, "state_error": self.state_error,
            "bars_published": self.published, "bars_rejected": self.gate.rejected,
            "decisions": self.decided, "bad_predictions": self.bad_predictions,
            "decided_without_prediction": self.without_prediction,
            "last_bar": self.last_bar.to_dict() if self.last_bar else None,
            "last_prediction": self.last_prediction, "last_decision": self.last_decision,
            "bar_to_prediction": percentiles(self.prediction_us),
            "bar_to_decision": percentiles(self.decision_us),
            "decision_to_record": percentiles(self.record_us),
            "bar_subscribers": self.publisher.subscribers("bars") if self.publisher else 0,
            **self._trading_status(),
        }

    # --- ops -------------------------------------------------------------------------------
    def _engine(self) -> TradingEngine:
        if self.engine is None:
            raise errors.MessageError(errors.NOT_TRADING, self.state_error or "no trading engine")
        return self.engine

    def _save_risk(self) -> None:
        with self.db.transaction(money=False) as conn:
            self.db.put("risk_state", self._engine().risk.state.to_dict(), conn)

    def op_pause(self, args: dict[str, Any]) -> dict[str, Any]:
        self._engine().risk.pause()
        self._save_risk()
        self.log.info("paused by operator: no new positions")
        return self._trading_status()

    def op_resume(self, args: dict[str, Any]) -> dict[str, Any]:
        """Allow opening again; when the book disagrees with the exchange, the operator's
        resume also takes the exchange's balances as the book's (``adopt_exchange``)."""
        engine = self._engine()
        engine.risk.resume()
        self._save_risk()
        if engine.blocked:
            problem = engine.adopt_exchange("operator resume")
            if problem:
                self.log.warning("resume: still blocked: %s", problem)
        self.log.info("resumed by operator")
        return self._trading_status()

    def op_flatten(self, args: dict[str, Any]) -> dict[str, Any]:
        decision = self._engine().flatten("operator flatten", str(time.time_ns()))
        self.log.info("flatten by operator: %s", decision.action if decision else "already flat")
        return {"flattened": decision is not None and decision.action != "hold",
                **self._trading_status()}

    def op_trades(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        self._engine()
        return self.db.fills(args["since"], args["limit"])

    def op_equity(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        self._engine()
        return self.db.equity_curve(args["since"], args["limit"])

    def op_decisions(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        self._engine()
        return self.db.decisions(args["since"], args["limit"])

    def op_bars_since(self, args: dict[str, Any]) -> dict[str, Any]:
        """Published bars with after < ts < before (history's gap backfill)."""
        symbol, after, before = args["symbol"], args["after"], args["before"]
        bars = [b for b in self.recent if b.symbol == symbol and after < b.ts < before]
        return bars_to_columns(symbol, bars)
