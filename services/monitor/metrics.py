"""The Prometheus endpoint: prometheus-client's own HTTP server on 127.0.0.1:PORT/metrics, in a
thread of the monitor, with one collector that builds every metric at scrape time from the
monitor's latest sample, mode, alert counts and the services' last ``status`` replies (read
over the bus every ``monitor.status_interval_s``). Nothing is kept twice.

Metric names: ``bdt_<what>_<unit>``; counters end in ``_total``. Slices are labelled
``slice`` (the tree is ``slice="<cgroups.tree>"``, "bitdaytrader" by default), programs
``program``.

A port another process holds does not end the endpoint: ``MetricsListener`` binds again after
1 s, 2 s, 4 s … (at most every ``RETRY_MAX_S``) until the port is free.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from services.monitor.psi import RESOURCES
from services.monitor.sampler import Sample, SliceSample
from shared.protocol.alerts import KINDS as ALERT_KINDS
from shared.protocol.events import MODES

log = logging.getLogger("bdt.monitor")


@dataclass
class MetricsView:
    """What a scrape reads; the monitor replaces fields whole (never mutates them in place),
    so the HTTP thread always sees a consistent value of each."""

    sample: Sample | None = None
    mode: str = "normal"
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    restarts_done: dict[str, int] = field(default_factory=dict)
    webhook: dict[str, Any] = field(default_factory=dict)


def dig(d: Any, *path: str) -> Any:
    """``d[path[0]][path[1]]…`` or None where a step is missing or not a dict."""
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def number(value: Any) -> float | None:
    """A finite number as float (bools as 0/1); None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
        return float(value)
    return None


# (metric, help, kind, service, path in its status reply, scale)
SERVICE_FIGURES: tuple[tuple[str, str, str, str, tuple[str, ...], float], ...] = (
    ("bdt_bot_bars_published_total", "bars the bot published", "counter", "bot",
     ("bars_published",), 1.0),
    ("bdt_bot_decisions_total", "decisions the bot made", "counter", "bot", ("decisions",), 1.0),
    ("bdt_bot_decided_without_prediction_total", "bars decided without a prediction",
     "counter", "bot", ("decided_without_prediction",), 1.0),
    ("bdt_bot_equity", "equity, quote currency", "gauge", "bot", ("equity",), 1.0),
    ("bdt_bot_cash", "cash, quote currency", "gauge", "bot", ("cash",), 1.0),
    ("bdt_bot_today_pnl", "today's P&L, quote currency", "gauge", "bot", ("today_pnl",), 1.0),
    ("bdt_bot_position_qty", "position, base currency", "gauge", "bot", ("position", "qty"),
     1.0),
    ("bdt_bot_paused", "1 while the operator paused new positions", "gauge", "bot",
     ("risk", "paused"), 1.0),
    ("bdt_bot_killed", "1 after the drawdown kill switch", "gauge", "bot", ("risk", "killed"),
     1.0),
    ("bdt_bot_bar_to_decision_p99_seconds", "bar → decision p99 over the recent bars",
     "gauge", "bot", ("bar_to_decision", "p99_us"), 1e-6),
    ("bdt_predictor_predictions_total", "predictions published", "counter", "predictor",
     ("predictions_published",), 1.0),
    ("bdt_predictor_bars_without_prediction_total", "bars the predictor could not predict",
     "counter", "predictor", ("bars_without_prediction",), 1.0),
    ("bdt_predictor_inference_p50_seconds", "inference latency p50", "gauge", "predictor",
     ("inference", "p50_us"), 1e-6),
    ("bdt_predictor_inference_p99_seconds", "inference latency p99", "gauge", "predictor",
     ("inference", "p99_us"), 1e-6),
    ("bdt_history_bars_stored_total", "bars history stored", "counter", "history",
     ("stored",), 1.0),
    ("bdt_history_store_bytes", "size of the market-data store", "gauge", "history",
     ("store_bytes",), 1.0),
    ("bdt_cache_items", "keys in the cache", "gauge", "cache", ("cache", "items"), 1.0),
    ("bdt_cache_bytes", "bytes the cache accounts for", "gauge", "cache", ("cache", "bytes"),
     1.0),
    ("bdt_cache_hit_ratio", "hits / (hits + misses)", "gauge", "cache", ("cache", "hit_rate"),
     1.0),
    ("bdt_cache_evictions_total", "keys evicted by the LRU bound", "counter", "cache",
     ("cache", "evictions"), 1.0),
)

SLICE_GAUGES: tuple[tuple[str, str, Callable[[SliceSample], Any]], ...] = (
    ("bdt_slice_memory_process_bytes", "process (anonymous) memory: what the cap is about",
     lambda s: s.memory_process),
    ("bdt_slice_memory_page_cache_bytes", "page cache, reclaimed before any kill",
     lambda s: s.memory_page_cache),
    ("bdt_slice_memory_peak_bytes", "the cgroup's memory high-water mark",
     lambda s: s.memory_peak),
    ("bdt_slice_memory_cap_bytes", "the allocation table's cap", lambda s: s.cap_bytes),
    ("bdt_slice_cpu_cores", "CPU use over the last sample interval", lambda s: s.cpu_cores),
    ("bdt_slice_cpu_quota_cores", "CPU quota", lambda s: s.cpu_quota),
)
SLICE_COUNTERS: tuple[tuple[str, str, Callable[[SliceSample], Any]], ...] = (
    ("bdt_slice_oom_kills", "OOM kills in the slice", lambda s: s.oom_kills),
    ("bdt_slice_cpu_seconds", "CPU time used", lambda s: s.cpu_seconds),
    ("bdt_slice_cpu_throttled_periods", "CPU quota periods throttled", lambda s: s.cpu_throttled),
)


class MonitorCollector(Collector):
    def __init__(self, view: Callable[[], MetricsView]) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        v = self.view()
        yield from self._mode(v)
        if v.sample is not None:
            yield from self._slices(v.sample)
            yield from self._programs(v.sample)
        yield from self._services(v)
        alerts = CounterMetricFamily("bdt_alerts", "alerts raised, by kind (every declared "
                                     "kind, 0 until one is raised)", labels=["kind"])
        for kind in sorted(set(ALERT_KINDS) | set(v.alerts)):
            alerts.add_metric([kind], v.alerts.get(kind, 0))
        yield alerts
        restarts = CounterMetricFamily("bdt_monitor_restarts", "programs the monitor restarted "
                                       "before the kernel could kill them", labels=["program"])
        for program, n in sorted(v.restarts_done.items()):
            restarts.add_metric([program], n)
        yield restarts
        failed = CounterMetricFamily("bdt_monitor_webhook_failures", "alerts the webhook did "
                                     "not take")
        failed.add_metric([], v.webhook.get("failed", 0) + v.webhook.get("dropped", 0))
        yield failed

    def _mode(self, v: MetricsView) -> Iterator[Metric]:
        mode = GaugeMetricFamily("bdt_mode", "the resource mode: 1 for the current one",
                                 labels=["mode"])
        for name in MODES:
            mode.add_metric([name], 1.0 if name == v.mode else 0.0)
        yield mode
        level = GaugeMetricFamily("bdt_mode_level", "0 normal, 1 low_resource, 2 critical")
        level.add_metric([], float(MODES.index(v.mode)))
        yield level

    def _slices(self, s: Sample) -> Iterator[Metric]:
        slices = [s.tree, *s.slices.values()]
        for name, help_, get in SLICE_GAUGES:
            g = GaugeMetricFamily(name, help_, labels=["slice"])
            for sl in slices:
                if (value := number(get(sl))) is not None:
                    g.add_metric([sl.slice], value)
            yield g
        for name, help_, get in SLICE_COUNTERS:
            c = CounterMetricFamily(name, help_, labels=["slice"])
            for sl in slices:
                if (value := number(get(sl))) is not None:
                    c.add_metric([sl.slice], value)
            yield c
        psi = GaugeMetricFamily("bdt_slice_pressure_avg10_percent", "PSI avg10 of the slice, "
                                "where the kernel offers it", labels=["slice", "resource", "kind"])
        host = GaugeMetricFamily("bdt_host_pressure_avg10_percent", "PSI avg10 of the whole "
                                 "machine", labels=["resource", "kind"])
        for resource in RESOURCES:
            for kind in ("some", "full"):
                for sl in slices:
                    value = number(dig(sl.pressure, resource, f"{kind}_avg10"))
                    if value is not None:
                        psi.add_metric([sl.slice, resource, kind], value)
                value = number(dig(s.host_pressure, resource, f"{kind}_avg10"))
                if value is not None:
                    host.add_metric([resource, kind], value)
        yield psi
        yield host
        cpu = GaugeMetricFamily("bdt_tree_cpu_percent_of_quota", "the tree's CPU use in % of "
                                "its quota (what the modes are judged on)")
        if s.cpu_pct is not None:
            cpu.add_metric([], s.cpu_pct)
        yield cpu
        cost = GaugeMetricFamily("bdt_monitor_sample_cpu_seconds", "CPU time the last sample "
                                 "took the monitor")
        cost.add_metric([], s.cost_s)
        yield cost

    def _programs(self, s: Sample) -> Iterator[Metric]:
        running = GaugeMetricFamily("bdt_program_running", "1 while supervisord says RUNNING",
                                    labels=["program", "state"])
        memory = GaugeMetricFamily("bdt_program_memory_process_bytes", "RssAnon of the program "
                                   "and its descendants", labels=["program"])
        cpu = GaugeMetricFamily("bdt_program_cpu_cores", "CPU use over the last interval",
                                labels=["program"])
        uptime = GaugeMetricFamily("bdt_program_uptime_seconds", "since supervisord started it",
                                   labels=["program"])
        restarts = CounterMetricFamily("bdt_program_restarts", "new pids seen since the monitor "
                                       "started", labels=["program"])
        for name, p in s.programs.items():
            running.add_metric([name, p.state], 1.0 if p.state == "RUNNING" else 0.0)
            if p.memory_process is not None:
                memory.add_metric([name], p.memory_process)
            if p.cpu_cores is not None:
                cpu.add_metric([name], p.cpu_cores)
            uptime.add_metric([name], p.uptime_s)
            restarts.add_metric([name], p.restarts)
        yield from (running, memory, cpu, uptime, restarts)

    def _services(self, v: MetricsView) -> Iterator[Metric]:
        up = GaugeMetricFamily("bdt_service_up", "1 when the service answered its last status "
                               "request", labels=["service"])
        rss = GaugeMetricFamily("bdt_service_rss_bytes", "RSS the service reports",
                                labels=["service"])
        for service, status in sorted(v.statuses.items()):
            up.add_metric([service], 0.0 if status.get("error") else 1.0)
            if (value := number(status.get("rss_bytes"))) is not None:
                rss.add_metric([service], value)
        yield up
        yield rss
        for name, help_, kind, service, path, scale in SERVICE_FIGURES:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name.removesuffix("_total"), help_)
            value = number(dig(v.statuses.get(service), *path))
            if value is not None:
                family.add_metric([], value * scale)
            yield family


class MetricsServer:
    """prometheus-client's HTTP server on 127.0.0.1:``port`` serving ``collector`` alone."""

    def __init__(self, port: int, collector: Collector) -> None:
        from prometheus_client import start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.server, self.thread = start_http_server(port, addr="127.0.0.1",
                                                     registry=self.registry)
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if isinstance(self.thread, threading.Thread):
            self.thread.join(5)


RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0


class MetricsListener:
    """The endpoint on 127.0.0.1:``port``, bound by ``bind()`` whenever ``due()``: at once,
    then after a failure (the port busy) 1 s, 2 s, 4 s … later, at most ``RETRY_MAX_S``."""

    def __init__(self, port: int, collector: Collector,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.port, self.collector, self.clock = port, collector, clock
        self.server: MetricsServer | None = None
        self.attempts = 0
        self.failing_since: float | None = None
        self.next_attempt = clock()
        self.last_error = ""

    def due(self) -> bool:
        return self.server is None and self.clock() >= self.next_attempt

    def bind(self) -> str | None:
        """One attempt: None once listening, else the error (and the next attempt planned)."""
        self.attempts += 1
        try:
            self.server = MetricsServer(self.port, self.collector)
            return None
        except OSError as exc:
            now = self.clock()
            self.failing_since = self.failing_since if self.failing_since is not None else now
            self.last_error = str(exc)
            self.next_attempt = now + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.attempts - 1))
            return self.last_error

    def waited_s(self) -> float:
        """Since the first failed attempt (0 when none failed)."""
        return 0.0 if self.failing_since is None else self.clock() - self.failing_since

    def status(self) -> dict[str, Any]:
        return {"port": self.server.port if self.server else self.port,
                "listening": self.server is not None, "attempts": self.attempts,
                "last_error": self.last_error or None}

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
