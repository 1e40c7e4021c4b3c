"""The monitor: the resource watchdog of the control slice (docs/monitor.md).

Every ``monitor.sample_interval_s`` it samples every slice and program (``sampler``), keeps
the samples in a ring and a downsampled SQLite history (``store``), judges the resource mode
(``modes``) and publishes its changes as ``mode`` events, restarts a program through
supervisord before the kernel would OOM-kill it (``guard``, ``leaks``), stops batch programs
while the mode is critical, raises alerts (``raise_alert``, as every service does) and is the
one sink of every service's alerts (``alerts``: it subscribes to ``events``; SQLite, log,
webhook), serves Prometheus metrics (``metrics``, bound again while its port is busy) and
writes its latest picture into the cache (``snapshot``). It acts only through supervisord and
the bus (circus's resource watcher is the model, DESIGN §8).
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

from services.monitor.alerts import AlertBook, Webhook
from services.monitor.guard import OomGuard, Restarter
from services.monitor.leaks import LeakDetector
from services.monitor.metrics import MetricsListener, MetricsView, MonitorCollector
from services.monitor.modes import Latch, ModeMachine, Thresholds, gib
from services.monitor.sampler import Sample, Sampler
from services.monitor.snapshot import Snapshot
from services.monitor.statuses import ServiceStatuses
from services.monitor.store import Downsampler, MonitorDB
from shared.bus.service import Service
from shared.bus.streams import StreamMessage
from shared.config import Config, ConfigError
from shared.protocol import monitor
from shared.protocol.alerts import AlertError, check_alert, raise_alert
from shared.protocol.events import EventError, event, parse_event
from shared.resources import supervisor
from shared.resources.allocation import AllocationError
from shared.resources.cgexec import load_table, open_tree

MiB = 1 << 20
MODE_SEVERITY = {"normal": "info", "low_resource": "warning", "critical": "critical"}
# supervisord states in which a program that was running has failed (STOPPED is deliberate)
FAILED = ("EXITED", "BACKOFF", "FATAL")


class MonitorService(Service):
    name = "monitor"
    summary = "resource watchdog: slices, modes, restarts before OOM, alerts, metrics"
    ops = monitor.OPS
    publishes = True
    streams_in = ("events",)      # every service's alerts: the monitor is their one sink

    def __init__(self, cfg: Config, *, backend: Any = None, processes: Any = None,
                 connect: Any = None) -> None:
        """``backend`` (a cgroup backend), ``processes`` (supervisord's table) and ``connect``
        (an XML-RPC proxy) default to the real ones; tests pass their own. ConfigError for
        inconsistent settings or an unreadable allocation table."""
        super().__init__(cfg)
        m = self.settings = cfg.section("monitor")
        self.tick_interval_s = m["sample_interval_s"]
        self.thresholds = Thresholds.from_config(cfg)
        try:
            self.table = load_table(cfg)
        except AllocationError as exc:
            raise ConfigError(f"cgroups.allocation: {exc}") from None
        self.backend = backend if backend is not None else open_tree(
            cfg, from_supervisor=True, create=False)
        self.sampler = Sampler(cfg, self.table, self.backend,
                               processes or (lambda: supervisor.process_table(cfg)))
        self.ring: collections.deque[Sample] = collections.deque(maxlen=m["ring_samples"])
        self.modes = ModeMachine(self.thresholds, time.time())
        hyst, enter, leave = m["hysteresis"], m["enter_samples"], m["exit_samples"]
        self.high_memory = Latch(m["alert_memory_mb"] * MiB, hyst, enter, leave)
        self.high_cpu = Latch(m["alert_cpu_pct"], hyst, enter, leave)
        leaks = LeakDetector(m["leak_window_s"], m["leak_min_samples"], m["leak_min_mib_per_h"],
                             m["leak_min_r2"], m["leak_horizon_s"])
        self.guard = OomGuard(m["restart_fraction"], m["restart_samples"],
                              m["restart_cooldown_s"], m["never_restart"], leaks, self.name,
                              m["leak_grace_s"])
        self.restarter = Restarter(connect or (lambda: supervisor.connect(cfg)),
                                   supervisor.GROUP)
        self.db = MonitorDB(cfg.var_dir / "data" / "monitor.db", m["history_days"],
                            m["alert_days"])
        self.webhook = Webhook(m["webhook_url"], m["webhook_timeout_s"]) \
            if m["webhook_url"] else None
        self.alerts = AlertBook(self.db, m["alert_min_interval_s"], self.webhook)
        self.downsampler = Downsampler(m["history_step_s"])
        self.statuses = ServiceStatuses(cfg, m["status_interval_s"], m["status_timeout_ms"])
        self.snapshot = Snapshot(cfg, m["snapshot_ttl_s"], m["status_timeout_ms"])
        self.view = MetricsView()
        self.latest: Sample | None = None
        self.restarts_done: collections.Counter[str] = collections.Counter()
        self.expected_exit: set[str] = set()      # programs the monitor is stopping/restarting
        self.prev: dict[str, tuple[str, int | None]] = {}     # program → (state, pid)
        self.prev_oom: dict[str, int] = {}
        self.supervisor_error: str | None = None
        self.announced_at = -math.inf
        self.events_subscribers = 0
        if self.db.error:
            raise_alert(self, "monitor", "monitor.db", self.db.error)
        self.metrics = MetricsListener(m["metrics_port"], MonitorCollector(lambda: self.view)) \
            if m["metrics_port"] else None
        self._listen()

    # --- the periodic work ------------------------------------------------------------------
    def tick(self) -> None:
        """One sample, then each step on its own: a failing step is logged and the others
        still run (a bug in the metrics never skips a restart)."""
        try:
            self._listen()
        except Exception:
            self.log.exception("binding the metrics endpoint failed")
        sample = self.sampler.sample()
        self.latest = sample
        self.ring.append(sample)
        for step in (self._judge_mode, self._judge_memory, self._stop_in_critical,
                     self._judge_levels, self._judge_programs, self._collect_restarts,
                     self._record, self._share):
            try:
                step(sample)
            except Exception:
                self.log.exception("monitor step %s failed", step.__name__)

    def _record(self, s: Sample) -> None:
        rows = self.downsampler.add(s)
        if rows:
            self.db.add_history(rows)
            self.db.prune(int(s.ts * 1000))

    def _share(self, s: Sample) -> None:
        """The metrics' view, the cache snapshot, and the mode again when due."""
        running = {n for n, p in s.programs.items() if p.state == "RUNNING"}
        statuses = self.statuses.refresh(running)
        self.view = MetricsView(s, self.modes.mode, statuses, dict(self.alerts.counts),
                                dict(self.restarts_done),
                                self.webhook.stats() if self.webhook else {})
        self.snapshot.write(s, self.mode_info(), self.alerts.active())
        self._announce_mode()

    def _judge_mode(self, s: Sample) -> None:
        change = self.modes.update(s.memory_bytes, s.cpu_pct, s.ts)
        if change is None:
            return
        self.db.add_mode(int(s.ts * 1000), change.new, change.old, change.reason,
                         change.memory_bytes, change.cpu_pct)
        self._publish_mode()
        raise_alert(self, "mode", self.cfg.get("cgroups.tree"),
                    f"resource mode {change.old} → {change.new}: {change.reason}",
                    severity=MODE_SEVERITY[change.new], old=change.old, new=change.new,
                    memory_bytes=change.memory_bytes,
                    cpu_pct=None if change.cpu_pct is None else round(change.cpu_pct, 1))

    def _judge_levels(self, s: Sample) -> None:
        """The seed's high-memory (3.0 GiB) and high-CPU (80 %) alerts, once per crossing."""
        m = self.settings
        if self.high_memory.update(s.memory_bytes) == "rose":
            raise_alert(self, "high_memory", self.cfg.get("cgroups.tree"),
                        f"process memory {gib(s.memory_bytes)} ≥ "
                        f"{gib(m['alert_memory_mb'] * MiB)}",
                        memory_bytes=s.memory_bytes, threshold_bytes=m["alert_memory_mb"] * MiB)
        if self.high_cpu.update(s.cpu_pct) == "rose":
            raise_alert(self, "high_cpu", self.cfg.get("cgroups.tree"),
                        f"CPU {s.cpu_pct:.0f}% of the tree's quota ≥ {m['alert_cpu_pct']:.0f}%",
                        cpu_pct=round(s.cpu_pct or 0, 1), threshold_pct=m["alert_cpu_pct"])

    def _judge_programs(self, s: Sample) -> None:
        """supervisord unreachable, programs that failed or changed pid behind our back, and
        OOM kills the kernel made after all."""
        if s.supervisor_error and self.supervisor_error is None:
            raise_alert(self, "supervisor", "supervisord", s.supervisor_error)
        elif self.supervisor_error and not s.supervisor_error:
            raise_alert(self, "supervisor", "supervisord", "reachable again", severity="info")
        self.supervisor_error = s.supervisor_error
        for name, p in s.programs.items():
            state, pid = self.prev.get(name, (p.state, p.pid))
            self.prev[name] = (p.state, p.pid)
            if name in self.expected_exit or name in self.guard.never:
                continue
            if p.state in FAILED and state not in FAILED:
                raise_alert(self, "crash", name,
                            f"{name} is {p.state} (was {state}): exit status {p.exit_status}"
                            + (f", {p.spawn_error}" if p.spawn_error else ""),
                            severity="critical" if p.state == "FATAL" else "warning",
                            state=p.state, exit_status=p.exit_status)
            elif pid is not None and p.pid is not None and p.pid != pid:
                raise_alert(self, "crash", name, f"{name} has a new pid ({pid} → {p.pid}): it "
                            "exited or was restarted outside the monitor",
                            state=p.state, old_pid=pid, pid=p.pid)
        for name, sl in s.slices.items():
            if sl.oom_kills is None:
                # no cgroup yet (its first program makes it: the batch slice before its first
                # job) or none at all: every kill it shows once it exists is new
                self.prev_oom.setdefault(name, 0)
                continue
            before = self.prev_oom.get(name)
            self.prev_oom[name] = sl.oom_kills
            if before is not None and sl.oom_kills > before:
                raise_alert(self, "oom_kill", name,
                            f"slice {name}: {sl.oom_kills - before} OOM kill(s) by the kernel "
                            f"(cap {sl.cap_bytes / MiB:.0f} MiB)",
                            oom_kills=sl.oom_kills, new=sl.oom_kills - before,
                            cap_bytes=sl.cap_bytes, memory_peak=sl.memory_peak)

    def _judge_memory(self, s: Sample) -> None:
        verdict = self.guard.judge(s, self.restarter.busy)
        for r in verdict.restarts:
            raise_alert(self, "restart", r.program, r.message, **r.figures, why=r.why)
            self.expected_exit.add(r.program)
            self.restarts_done[r.program] += 1
            self.restarter.start(r.program)
        for r in verdict.held:
            # back over budget within its cooldown is a repeated failure; a batch job near
            # its cap (or the monitor itself) is something to know of
            severity = "critical" if r.held.startswith("restarted") else "warning"
            raise_alert(self, "restart_held", r.program, f"not restarted ({r.held}): "
                        f"{r.message}", severity=severity, **r.figures, why=r.why, held=r.held)
        for report in verdict.leaks:
            eta = "no cap" if report.eta_s is None else f"its slice's cap in " \
                f"{report.eta_s / 3600:.1f} h at this rate"
            raise_alert(self, "leak", report.program, f"{report.program}: process memory grows "
                        f"{report.growth_mib_per_h:.0f} MiB/h (R² {report.r2:.2f}); {eta}",
                        **report.figures())

    def _stop_in_critical(self, s: Sample) -> None:
        """Critical mode cancels batch work. The scheduler cancels the job it runs when it
        hears the mode (and records the run as cancelled); a program of
        ``monitor.stop_in_critical`` still running ``critical_stop_after_s`` into critical mode
        (the scheduler is down, or the job was started by hand) is stopped here, through
        supervisord."""
        waited = s.ts - self.modes.since
        if self.modes.mode != "critical" or waited < self.settings["critical_stop_after_s"]:
            return
        for name in self.settings["stop_in_critical"]:
            p = s.programs.get(name)
            if p is None or p.state != "RUNNING" or self.restarter.busy(name):
                continue
            self.expected_exit.add(name)
            self.restarter.start(name, action="stop")
            raise_alert(self, "critical_stop", name, f"stopping {name}: still running "
                        f"{waited:.0f} s into critical resource mode ({self.modes.reason})",
                        pid=p.pid, memory_bytes=s.memory_bytes, critical_for_s=round(waited, 1))

    def _collect_restarts(self, s: Sample) -> None:
        for result in self.restarter.results():
            self.expected_exit.discard(result.program)
            # the next sample sees the new pid or the stop: no "crash" alert for what the
            # monitor did itself
            self.prev.pop(result.program, None)
            if result.ok:
                self.log.info("%s of %s done in %.1f s", result.action, result.program,
                              result.seconds)
            else:
                raise_alert(self, "restart_failed", result.program, f"{result.action} of "
                            f"{result.program} through supervisord failed: {result.error}",
                            action=result.action, error=result.error)

    # --- the metrics endpoint ----------------------------------------------------------------
    def _listen(self) -> None:
        """Bind the metrics endpoint when due: a ``monitor`` alert at the first failure (the
        port busy), ``metrics_listening`` once it listens after failing."""
        m = self.metrics
        if m is None or not m.due():
            return
        error = m.bind()
        address = f"127.0.0.1:{m.port}"
        if error is None:
            self.log.info("metrics on http://127.0.0.1:%d/metrics", m.status()["port"])
            if m.attempts > 1:
                raise_alert(self, "metrics_listening", "metrics", f"metrics endpoint {address} "
                            f"served after {m.attempts} attempts ({m.waited_s():.0f} s)",
                            port=m.port, attempts=m.attempts, waited_s=round(m.waited_s(), 1))
        elif m.attempts == 1:
            raise_alert(self, "monitor", "metrics", f"metrics endpoint {address} not served: "
                        f"{error}; trying again with backoff", port=m.port)
        else:
            self.log.debug("metrics endpoint %s still not served: %s", address, error)

    # --- alerts: the one sink -----------------------------------------------------------------
    def publish(self, stream: str, fields: dict[str, Any]) -> None:
        """The monitor's own alerts go into the sink at once (it needs no bus to hear itself),
        then on ``events`` like every service's; without a bus (tests driving ``tick()``) only
        into the sink."""
        if stream == "events" and fields.get("kind") == "alert":
            self.alerts.take(fields)
        if self.publisher is not None:
            super().publish(stream, fields)

    def on_stream(self, msg: StreamMessage) -> None:
        """Every other service's alerts from the ``events`` stream, into the sink. One its
        kind's declaration refuses still reaches the operator, as a ``monitor`` alert."""
        try:
            kind, fields = parse_event(msg.fields)
        except EventError as exc:
            self.ignored("malformed events", f"ignored an event: {exc}")
            return
        if kind != "alert" or fields["source"] == self.name:       # ours is in already
            return
        try:
            check_alert(fields)
        except AlertError as exc:
            raise_alert(self, "monitor", fields["source"] or "?", f"{fields['source']} raised an "
                        f"alert its declaration refuses ({exc}): {fields['alert']} "
                        f"{fields['subject']}: {fields['message']}", refused=fields["alert"])
            return
        self.alerts.take(fields)

    # --- publishing -------------------------------------------------------------------------
    def _publish(self, fields: dict[str, Any]) -> None:
        if self.publisher is not None:      # None only in tests that drive tick() directly
            self.publish("events", fields)

    def _publish_mode(self) -> None:
        self._publish(event("mode", mode=self.modes.mode))
        self.announced_at = time.monotonic()

    def _announce_mode(self) -> None:
        """The mode again when a new subscriber joined (a restarted bot, which may have loaded
        an old mode from its state) and every ``mode_announce_s`` anyway."""
        subscribers = self.publisher.subscribers("events") if self.publisher else 0
        due = time.monotonic() - self.announced_at >= self.settings["mode_announce_s"]
        if subscribers > self.events_subscribers or due:
            self._publish_mode()
        self.events_subscribers = subscribers

    # --- ops and status ---------------------------------------------------------------------
    def mode_info(self) -> dict[str, Any]:
        s = self.latest
        return {"mode": self.modes.mode, "since": self.modes.since, "reason": self.modes.reason,
                "memory_bytes": s.memory_bytes if s else None,
                "cpu_pct": s.cpu_pct if s else None}

    def op_mode(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**self.mode_info(), "thresholds": self.thresholds.as_dict(),
                "changes": self.db.modes(20)}

    def op_sample(self, args: dict[str, Any]) -> dict[str, Any] | None:
        return self.latest.to_dict() if self.latest else None

    def op_alerts(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return self.db.alerts(args["since"], args["limit"], args["kind"])

    def op_history(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return self.db.history(args["name"], args["since"], args["limit"])

    def service_status(self) -> dict[str, Any]:
        costs = [s.cost_s for s in self.ring]
        return {
            "mode": self.modes.mode, "mode_since": self.modes.since,
            "mode_reason": self.modes.reason, "samples": len(self.ring),
            "last_sample_ts": self.latest.ts if self.latest else None,
            "sample_cpu_ms": round(1000 * sum(costs) / len(costs), 2) if costs else None,
            "cgroups_enforced": self.latest.enforced if self.latest else None,
            "metrics_port": self.metrics.status()["port"] if self.metrics else None,
            "metrics": self.metrics.status() if self.metrics else None,
            "webhook": self.webhook.stats() if self.webhook else None,
            "snapshot": {"written": self.snapshot.written, "failed": self.snapshot.failed,
                         "last_error": self.snapshot.last_error},
            "restarts_done": dict(self.restarts_done), "alerts": dict(self.alerts.counts),
            "alerts_merged": self.alerts.merged,
            "db_error": self.db.error or None, "db_write_failures": self.db.write_failures,
        }

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.restarter.join(timeout=5)      # supervisord kills us after its stopwaitsecs
        rows = self.downsampler.flush()
        if rows:
            self.db.add_history(rows)
        if self.webhook is not None:
            self.webhook.close()
        self.snapshot.close()
        self.db.close()
