"""predictor: one prediction per closed bar, from the promoted model set — or, for a bar it
cannot predict (no model, features warming up), a ``{symbol, bar_time, skipped: reason}``
message at once, so the bot decides without waiting for nothing.

Warm-up: on start (and after any gap) the features and the GARCH state are rebuilt from
history's recent bars, so the first prediction after a restart is the one an uninterrupted
predictor would have made. Hot reload: between two bars (the loop is single-threaded), when a
new version is promoted — announced on `events`, asked for with `reload`, or seen in the
registry pointer. A missing or corrupt model is reported in status and logs; then no
prediction is published at all, never a made-up one.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from shared.bus.client import BusClient, BusError
from shared.bus.service import Service, percentiles
from shared.bus.streams import StreamMessage
from shared.config import Config
from shared.market.bars import Bar, columns_to_bars, timeframe_ms
from shared.models.artifacts import ModelError
from shared.models.features import FEATURES, WARMUP_BARS, IncrementalFeatures, missing_bars
from shared.models.model_set import VolatilityFeed, VolatilityTrack
from shared.models.registry import LazyModel, ModelRegistry
from shared.protocol import errors, predictor
from shared.protocol.events import EventError, parse_event


class PredictorService(Service):
    name = "predictor"
    summary = "LightGBM + Ridge + GARCH(1,1) prediction per closed bar"
    streams_in = ("bars", "events")
    publishes = True
    ops = predictor.OPS

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.symbol = cfg.get("market.symbols")[0]
        self.timeframe = timeframe_ms(cfg.get("market.timeframe"))
        self.registry = ModelRegistry(cfg.model_dir)
        self.model = LazyModel(self.registry)
        self.model_error: str | None = None
        self.refused_version: str | None = None   # not retried until another is promoted
        self.max_gap_bars = cfg.get("model.max_gap_bars")
        self.features = IncrementalFeatures(self.timeframe, self.max_gap_bars)
        self.gaps = 0
        self.mode = "normal"             # the monitor's resource mode
        self.vol = VolatilityTrack(None, cfg.get("model.garch_warmup_bars"))
        self.volfeed = VolatilityFeed(self.vol, self.timeframe, self.max_gap_bars)
        self.last_bar: Bar | None = None
        self.warm = False
        self.published = 0
        self.skipped = 0
        self.last_prediction: dict[str, Any] | None = None
        self.inference_us = self.timing("inference")
        self.handling_us = self.timing("bar_handling")
        self.next_pointer_check = 0.0
        self._load()
        self._warm_up()
        self._settle()

    @staticmethod
    def _settle() -> None:
        """Move what is loaded now (model, libraries) out of the collector's sight: a full
        collection over it otherwise costs a 45-60 ms pause now and then, mid-bar."""
        gc.collect()
        gc.freeze()

    # --- model -----------------------------------------------------------------------------
    def _load(self, version: str | None = None) -> bool:
        """Load ``version`` (default: the promoted one); keep the old model if it fails."""
        candidate = LazyModel(self.registry, version)
        self.refused_version = version or self.registry.current()
        try:
            loaded = candidate.get()
            if tuple(loaded.model_set.features) != FEATURES:
                raise ModelError(self.registry.root, f"version {loaded.version} was trained on "
                                 "a different feature list than this code computes")
        except ModelError as exc:
            self.model_error = str(exc)
            self.log.error("model not usable: %s", exc)
            return False
        self.model.unload()
        self.model = candidate
        self.model_error = self.refused_version = None
        self.vol.set_params(loaded.model_set.garch)
        self._settle()
        self.log.info("model %s loaded", loaded.version)
        return True

    # --- bars ------------------------------------------------------------------------------
    def _fold(self, bar: Bar) -> np.ndarray | None:
        """Advance features, returns and the GARCH state by one bar."""
        x = self.features.update(bar)
        self.volfeed.fold(bar.ts, bar.close)     # cut on the same gaps as the features
        if self.features.last_gap is not None:
            self.gaps += 1
            self.log.warning("gap of %d missing bars before bar %d: features and GARCH warm "
                             "up again (no prediction for %d bars)", self.features.last_gap,
                             bar.ts, WARMUP_BARS)
        self.last_bar = bar
        return x

    def _warm_up(self, before: int | None = None) -> None:
        """Rebuild state from history's newest bars (all bars before ``before`` if given)."""
        n = max(WARMUP_BARS + 1, self.cfg.get("model.garch_warmup_bars") + 1)
        try:
            with BusClient("history", self.cfg, timeout_ms=2000, retries=1) as history:
                reply = history.call("latest", symbol=self.symbol, n=n + 5)
        except BusError as exc:
            self.log.warning("warm-up: history not available yet (%s)", exc)
            return
        bars = [b for b in columns_to_bars(reply) if before is None or b.ts < before][-n:]
        self.features = IncrementalFeatures(self.timeframe, self.max_gap_bars)
        self.vol = VolatilityTrack(self.vol.params, self.vol.returns.maxlen or 1)
        self.volfeed = VolatilityFeed(self.vol, self.timeframe, self.max_gap_bars)
        self.last_bar = None
        for bar in bars:
            self._fold(bar)
        self.warm = True
        self.log.info("warmed up from %d bars of history (last %s)", len(bars),
                      self.last_bar.ts if self.last_bar else None)

    def _catch_up(self, after: int, before: int) -> None:
        """A short gap: fold the bars history has in it that this predictor did not see (a
        dropped message); none there is a gap in the market data itself, which the features
        bridge as the batch features do. (A long gap cuts the series in ``_fold``.)"""
        try:
            with BusClient("history", self.cfg, timeout_ms=1000, retries=0) as history:
                reply = history.call("range", symbol=self.symbol, start=after + 1, end=before)
        except BusError as exc:
            self.log.warning("bars %d..%d not asked for (%s): bridged", after, before, exc)
            return
        missed = columns_to_bars(reply)
        for bar in missed:
            self._fold(bar)
        if missed:
            self.log.info("folded %d bar(s) this predictor had missed before %d", len(missed),
                          before)

    def on_stream(self, msg: StreamMessage) -> None:
        if msg.stream == "events":
            self._on_event(msg.fields)
            return
        started = time.perf_counter()
        try:
            bar = Bar.from_dict(msg.fields)
        except (KeyError, TypeError, ValueError) as exc:
            self.ignored("malformed bar messages", f"dropped a malformed bar message: {exc}")
            return
        if bar.symbol != self.symbol:
            return
        if self.last_bar is not None and bar.ts <= self.last_bar.ts:
            return                              # already seen: one prediction per bar
        if not self.warm:
            self._warm_up(before=bar.ts)
        elif self.last_bar is not None and 0 < missing_bars(
                bar.ts - self.last_bar.ts, self.timeframe) <= self.max_gap_bars:
            self._catch_up(self.last_bar.ts, bar.ts)
        x = self._fold(bar)
        why_not = self._why_not(x)
        if why_not is not None:
            # said at once, so the bot decides without waiting for a prediction that cannot come
            self.skipped += 1
            self.publish("predictions", {"symbol": bar.symbol, "bar_time": bar.ts,
                                         "skipped": why_not})
            return
        loaded = self.model.get()
        t0 = time.perf_counter()
        prediction = loaded.model_set.predict(x, self.vol.state, model_version=loaded.version,
                                              bar_time=bar.ts)
        self.inference_us.append((time.perf_counter() - t0) * 1e6)
        prediction["symbol"] = bar.symbol
        self.publish("predictions", prediction)
        self.last_prediction = prediction
        self.published += 1
        self.handling_us.append((time.perf_counter() - started) * 1e6)

    def _why_not(self, x: np.ndarray | None) -> str | None:
        """Why no prediction is made for the bar whose features are ``x``; None: one is."""
        if self.mode == "critical":      # optional work dropped: the bot opens nothing anyway
            return "critical resource mode"
        if not self.model.loaded:
            return f"no model ({self.model_error or 'not loaded'})"
        if x is None:
            return (f"warming up: {WARMUP_BARS + 1 - self.features.bars_seen} more bar(s) "
                    "before the features are complete")
        if self.vol.state is None:
            return "warming up: no GARCH state yet"
        return None

    def _on_event(self, fields: dict[str, Any]) -> None:
        """``model_promoted``: load it. ``mode`` (the monitor's): low_resource looks for new
        models 10× less often; critical predicts nothing (the state still advances, so the
        first bar after it is predicted as an uninterrupted predictor would)."""
        try:
            kind, fields = parse_event(fields)
        except EventError as exc:
            self.ignored("malformed events", f"ignored an event: {exc}")
            return
        if kind == "model_promoted":
            self.log.info("event: model %s promoted", fields["version"])
            self._load(fields["version"])
        elif kind == "mode" and fields["mode"] != self.mode:
            self.mode = fields["mode"]
            self.log.info("resource mode %s", self.mode)

    def tick(self) -> None:
        if not self.warm:
            self._warm_up()
        now = time.monotonic()
        if now >= self.next_pointer_check:
            self.next_pointer_check = now + self.cfg.get("model.reload_check_s") * (
                10 if self.mode == "low_resource" else 1)
            current = self.registry.current()
            if current not in (None, self.model.version, self.refused_version):
                self._load(current)

    # --- ops -------------------------------------------------------------------------------
    def service_status(self) -> dict[str, Any]:
        return {
            "model_version": self.model.version, "model_error": self.model_error,
            "warm": self.warm, "last_bar_ts": self.last_bar.ts if self.last_bar else None,
            "predictions_published": self.published, "bars_without_prediction": self.skipped,
            "gaps": self.gaps, "resource_mode": self.mode,
            "prediction_subscribers": self.publisher.subscribers("predictions")
            if self.publisher else 0,
            "last_prediction": self.last_prediction,
            "inference": percentiles(self.inference_us),
            "bar_handling": percentiles(self.handling_us),
        }

    def op_predict(self, args: dict[str, Any]) -> dict[str, Any]:
        """The prediction for the last closed bar (``features`` may be given instead)."""
        if not self.model.loaded or self.vol.state is None:
            raise errors.MessageError(errors.NO_MODEL, self.model_error or "model not ready yet")
        if args["features"] is not None:
            loaded = self.model.get()
            try:
                x = np.array(args["features"], dtype=float)
                return loaded.model_set.predict(x, self.vol.state, model_version=loaded.version)
            except (TypeError, ValueError) as exc:
                raise errors.MessageError(errors.BAD_ARGS, f"features: {exc}") from None
        if self.last_prediction is None:
            raise errors.MessageError(errors.NO_PREDICTION, "no bar has been predicted yet")
        return self.last_prediction

    def op_reload(self, args: dict[str, Any]) -> dict[str, Any]:
        ok = self._load(args["version"])
        return {"ok": ok, "model_version": self.model.version, "error": self.model_error}
