"""The monitor: the resource watchdog of the control slice (docs/monitor.md).

Every ``monitor.sample_interval_s`` it samples every slice and program (``sampler``), keeps
the samples in a ring and a downsampled SQLite history (``store``), judges the resource mode
(``modes``) and publishes its changes as ``mode`` events, restarts a program through
supervisord before the kernel would OOM-kill it (``guard``, ``leaks``), stops batch programs
while the mode is critical, raises alerts (``alerts``: SQLite, log, ``alert`` events, webhook),
serves Prometheus metrics (``metrics``) and writes its latest picture into the cache
(``snapshot``). It acts only through supervisord and the bus (circus's resource watcher is the
model, DESIGN §8).
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any

from services.monitor.alerts import AlertBook, Webhook
from services.monitor.guard import OomGuard, Restarter
from services.monitor.leaks import LeakDetector
from services.monitor.metrics import MetricsServer, MetricsView, MonitorCollector
from services.monitor.modes import Latch, ModeChange, ModeMachine, Thresholds, gib
from services.monitor.sampler import Sample, Sampler
from services.monitor.snapshot import Snapshot
from services.monitor.statuses import ServiceStatuses
from services.monitor.store import Downsampler, MonitorDB
from shared.bus.service import Service
from shared.config import Config, ConfigError
from shared.protocol import monitor
from shared.protocol.events import event
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
        self.last_change: ModeChange | None = None
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
        self.alerts = AlertBook(self.db, m["alert_min_interval_s"], self._publish_alert,
                                self.webhook)
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
        self.pending: list[tuple[str, str, str, str]] = []    # alerts before the first tick
        if self.db.error:
            self.pending.append(("monitor", "warning", "monitor.db", self.db.error))
        self.metrics: MetricsServer | None = None
        if m["metrics_port"]:
            try:
                self.metrics = MetricsServer(m["metrics_port"],
                                             MonitorCollector(lambda: self.view))
                self.log.info("metrics on http://127.0.0.1:%d/metrics", self.metrics.port)
            except OSError as exc:
                self.pending.append(("monitor", "warning", "metrics", f"metrics endpoint "
                                     f"127.0.0.1:{m['metrics_port']} not served: {exc}"))

    # --- the periodic work ------------------------------------------------------------------
    def tick(self) -> None:
        """One sample, then each step on its own: a failing step is logged and the others
        still run (a bug in the metrics never skips a restart)."""
        sample = self.sampler.sample()
        self.latest = sample
        self.ring.append(sample)
        while self.pending:
            self.alerts.raise_alert(*self.pending.pop(0))
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
        self.last_change = change
        self.db.add_mode(int(s.ts * 1000), change.new, change.old, change.reason,
                         change.memory_bytes, change.cpu_pct)
        self._publish_mode()
        self.alerts.raise_alert("mode", MODE_SEVERITY[change.new], "bitdaytrader",
                                f"resource mode {change.old} → {change.new}: {change.reason}",
                                {"old": change.old, "new": change.new,
                                 "memory_bytes": change.memory_bytes,
                                 "cpu_pct": None if change.cpu_pct is None
                                 else round(change.cpu_pct, 1)})

    def _judge_levels(self, s: Sample) -> None:
        """The seed's high-memory (3.0 GiB) and high-CPU (80 %) alerts, once per crossing."""
        m = self.settings
        if self.high_memory.update(s.memory_bytes) == "rose":
            self.alerts.raise_alert("high_memory", "warning", "bitdaytrader",
                                    f"process memory {gib(s.memory_bytes)} ≥ "
                                    f"{gib(m['alert_memory_mb'] * MiB)}",
                                    {"memory_bytes": s.memory_bytes,
                                     "threshold_bytes": m["alert_memory_mb"] * MiB})
        if self.high_cpu.update(s.cpu_pct) == "rose":
            self.alerts.raise_alert("high_cpu", "warning", "bitdaytrader",
                                    f"CPU {s.cpu_pct:.0f}% of the tree's quota ≥ "
                                    f"{m['alert_cpu_pct']:.0f}%",
                                    {"cpu_pct": round(s.cpu_pct or 0, 1),
                                     "threshold_pct": m["alert_cpu_pct"]})

    def _judge_programs(self, s: Sample) -> None:
        """supervisord unreachable, programs that failed or changed pid behind our back, and
        OOM kills the kernel made after all."""
        if s.supervisor_error and self.supervisor_error is None:
            self.alerts.raise_alert("supervisor", "critical", "supervisord", s.supervisor_error)
        elif self.supervisor_error and not s.supervisor_error:
            self.alerts.raise_alert("supervisor", "info", "supervisord", "reachable again")
        self.supervisor_error = s.supervisor_error
        for name, p in s.programs.items():
            state, pid = self.prev.get(name, (p.state, p.pid))
            self.prev[name] = (p.state, p.pid)
            if name in self.expected_exit or name in self.guard.never:
                continue
            if p.state in FAILED and state not in FAILED:
                self.alerts.raise_alert(
                    "crash", "critical" if p.state == "FATAL" else "warning", name,
                    f"{name} is {p.state} (was {state}): exit status {p.exit_status}"
                    + (f", {p.spawn_error}" if p.spawn_error else ""),
                    {"state": p.state, "exit_status": p.exit_status})
            elif pid is not None and p.pid is not None and p.pid != pid:
                self.alerts.raise_alert("crash", "warning", name,
                                        f"{name} has a new pid ({pid} → {p.pid}): it exited "
                                        "or was restarted outside the monitor",
                                        {"old_pid": pid, "pid": p.pid})
        for name, sl in s.slices.items():
            before = self.prev_oom.get(name)
            if sl.oom_kills is None:
                continue
            self.prev_oom[name] = sl.oom_kills
            if before is not None and sl.oom_kills > before:
                self.alerts.raise_alert(
                    "oom_kill", "critical", name,
                    f"slice {name}: {sl.oom_kills - before} OOM kill(s) by the kernel "
                    f"(cap {sl.cap_bytes / MiB:.0f} MiB)",
                    {"oom_kills": sl.oom_kills, "new": sl.oom_kills - before,
                     "cap_bytes": sl.cap_bytes, "memory_peak": sl.memory_peak})

    def _judge_memory(self, s: Sample) -> None:
        verdict = self.guard.judge(s, self.restarter.busy)
        for r in verdict.restarts:
            self.alerts.raise_alert("restart", "warning", r.program, r.message,
                                    {**r.figures, "why": r.why})
            self.expected_exit.add(r.program)
            self.restarts_done[r.program] += 1
            self.restarter.start(r.program)
        for r in verdict.held:
            # back over budget within its cooldown is a repeated failure; a batch job near
            # its cap (or the monitor itself) is something to know of
            severity = "critical" if r.held.startswith("restarted") else "warning"
            self.alerts.raise_alert("restart_held", severity, r.program,
                                    f"not restarted ({r.held}): {r.message}",
                                    {**r.figures, "why": r.why, "held": r.held})
        for report in verdict.leaks:
            eta = "no cap" if report.eta_s is None else f"its slice's cap in " \
                f"{report.eta_s / 3600:.1f} h at this rate"
            self.alerts.raise_alert("leak", "warning", report.program,
                                    f"{report.program}: process memory grows "
                                    f"{report.growth_mib_per_h:.0f} MiB/h (R² {report.r2:.2f}); "
                                    f"{eta}", report.figures())

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
            self.alerts.raise_alert("critical_stop", "warning", name,
                                    f"stopping {name}: still running {waited:.0f} s into "
                                    f"critical resource mode ({self.modes.reason})",
                                    {"pid": p.pid, "memory_bytes": s.memory_bytes,
                                     "critical_for_s": round(waited, 1)})

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
                self.alerts.raise_alert("restart_failed", "critical", result.program,
                                        f"{result.action} of {result.program} through "
                                        f"supervisord failed: {result.error}",
                                        {"action": result.action, "error": result.error})

    # --- publishing -------------------------------------------------------------------------
    def _publish(self, fields: dict[str, Any]) -> None:
        if self.publisher is not None:      # None only in tests that drive tick() directly
            self.publish("events", fields)

    def _publish_mode(self) -> None:
        self._publish(event("mode", mode=self.modes.mode))
        self.announced_at = time.monotonic()

    def _publish_alert(self, kind: str, severity: str, subject: str, message: str,
                       figures: dict[str, Any]) -> None:
        self._publish(event("alert", alert=kind, severity=severity, subject=subject,
                            message=message, figures=figures))

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
            "metrics_port": self.metrics.port if self.metrics else None,
            "webhook": self.webhook.stats() if self.webhook else None,
            "snapshot": {"written": self.snapshot.written, "failed": self.snapshot.failed,
                         "last_error": self.snapshot.last_error},
            "restarts_done": dict(self.restarts_done), "alerts": dict(self.alerts.counts),
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
