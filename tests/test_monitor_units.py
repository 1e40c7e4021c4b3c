"""The monitor's parts on synthetic series and small real pieces (no stack): the mode state
machine and its hysteresis, leak detection, the restart rule, PSI and sampling on a cgroup v2
mimic tree and without cgroups, the SQLite history, alerts with their rate limit and a real
webhook, the metrics endpoint, and the op declarations. The whole stack is in
tests/test_monitor_stack.py."""

from __future__ import annotations

import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import shared.cli  # noqa: F401 - registers every verb
from services.monitor.alerts import AlertBook, Webhook
from services.monitor.guard import OomGuard
from services.monitor.leaks import LeakDetector, least_squares
from services.monitor.metrics import MetricsServer, MetricsView, MonitorCollector
from services.monitor.modes import Latch, ModeMachine, Thresholds
from services.monitor.psi import cgroup_pressure, host_pressure, parse_pressure
from services.monitor.sampler import ProgramSample, Sample, Sampler, SliceSample
from services.monitor.service import MonitorService
from services.monitor.store import Downsampler, MonitorDB
from shared.cli.verbs import VERBS
from shared.config import ConfigError, load_config
from shared.protocol import monitor
from shared.protocol.alerts import KINDS as ALERT_KINDS
from shared.protocol.alerts import alert_event
from shared.resources.cgexec import load_table
from shared.resources.cgroup import NullBackend
from shared.resources.cgroup_open import open_backend
from tests.helpers import REPO, stop_process, wait_until
from tests.test_declarations import op_problems

MiB = 1 << 20


# --- synthetic samples ---------------------------------------------------------------------
def slice_(name: str, memory: int | None, cap: int = 500 * MiB, programs=None,
           source: str = "cgroup", oom: int | None = 0) -> SliceSample:
    return SliceSample(name, tuple(programs or (name,)), source, cap, memory, 0, memory, oom,
                       None, None, None, None, None, {})


def program(name: str, slice_name: str, pid: int, memory: int, uptime: float = 1e4
            ) -> ProgramSample:
    return ProgramSample(name, slice_name, "RUNNING", pid, uptime, memory, None, None, True, 0,
                         None, None)


def sample(ts: float, slices: list[SliceSample], programs: list[ProgramSample],
           tree_memory: int = 0, cpu_cores: float | None = None) -> Sample:
    tree = SliceSample("bitdaytrader", (), "cgroup", 4096 * MiB, tree_memory, 0, None, 0, None,
                       cpu_cores, 1.0, None, None, {})
    return Sample(ts, 1.0, True, "v1", "", tree, {s.slice: s for s in slices},
                  {p.program: p for p in programs}, {}, None)


THRESHOLDS = Thresholds(low_memory=1000 * MiB, critical_memory=2000 * MiB, low_cpu_pct=70.0,
                        critical_cpu_pct=90.0, hysteresis=0.1, enter_samples=2, exit_samples=6)


def run_modes(machine: ModeMachine, memories_mib: list[float], cpu: float | None = None
              ) -> list[str]:
    changes = []
    for i, m in enumerate(memories_mib):
        change = machine.update(int(m * MiB), cpu, float(i))
        if change:
            changes.append(change.new)
    return changes


# --- modes ---------------------------------------------------------------------------------
def test_the_mode_does_not_flap_at_a_threshold():
    rng = random.Random(16)
    hovering = [1000 * (1 + rng.uniform(-0.03, 0.03)) for _ in range(400)]
    assert run_modes(ModeMachine(THRESHOLDS), hovering) == ["low_resource"]
    # the same series without hysteresis flaps: the test above can fail
    naive = Thresholds(1000 * MiB, 2000 * MiB, 70.0, 90.0, hysteresis=0.0, enter_samples=1,
                       exit_samples=1)
    assert len(run_modes(ModeMachine(naive), hovering)) > 50


def test_modes_rise_with_memory_and_fall_only_well_under_the_threshold():
    m = ModeMachine(THRESHOLDS)
    assert run_modes(m, [500, 1100, 500, 1100]) == []          # one sample over is no level
    assert run_modes(m, [1100, 1100]) == ["low_resource"]
    assert "memory 1.07 GiB ≥ 0.98 GiB for 2 samples" in m.reason
    assert run_modes(m, [2100, 2100]) == ["critical"]
    assert run_modes(m, [1850] * 20) == []                     # under 2000 but over 1800
    assert run_modes(m, [1700] * 5 + [1900] + [1700] * 5) == []     # a run broken: no change
    assert run_modes(m, [1700]) == ["low_resource"]            # the 6th in a row under 1800
    assert run_modes(m, [850] * 6) == ["normal"]
    m = ModeMachine(THRESHOLDS)
    run_modes(m, [2500, 2500])
    assert m.mode == "critical"
    assert run_modes(m, [100] * 6) == ["normal"]               # straight down when all is well
    assert "under the critical thresholds less 10% for 6 samples" in m.reason


def test_cpu_alone_drives_modes():
    m = ModeMachine(THRESHOLDS)
    assert run_modes(m, [100, 100], cpu=95.0) == ["critical"]
    assert "CPU 95% ≥ 90% of the tree's quota" in m.reason
    assert run_modes(m, [100] * 6, cpu=75.0) == ["low_resource"]   # 75 ≥ 63 keeps low
    assert run_modes(m, [100] * 6, cpu=60.0) == ["normal"]


def test_thresholds_must_rise(var_dir):
    env = {"BDT_VAR": str(var_dir), "BDT_MONITOR__LOW_MEMORY_MB": "4000"}
    with pytest.raises(ConfigError, match="low_memory_mb .* below"):
        Thresholds.from_config(load_config(env))
    with pytest.raises(ConfigError, match="low_memory_mb"):
        MonitorService(load_config(env), backend=NullBackend("t", "test"),
                       processes=lambda: [])
    with pytest.raises(ConfigError, match="monitor.restart_fraction"):
        load_config({"BDT_MONITOR__RESTART_FRACTION": "1.5"})
    with pytest.raises(ConfigError, match="http"):
        load_config({"BDT_MONITOR__WEBHOOK_URL": "file:///etc/passwd"})


def test_latch_fires_once_per_crossing():
    latch = Latch(100.0, 0.1, enter=2, exit=3)
    fired = [latch.update(v) for v in [120, 50, 120, 120, 130, 95, 80, 95, 89, 89, 89, 200]]
    assert fired == [None, None, None, "rose", None, None, None, None, None, None, "fell", None]


# --- leaks and restarts --------------------------------------------------------------------
def test_least_squares():
    slope, r2 = least_squares([(t, 3.0 * t + 7) for t in range(10)])
    assert slope == pytest.approx(3.0) and r2 == pytest.approx(1.0)
    assert least_squares([(t, 5.0) for t in range(10)]) == (0.0, 0.0)
    assert least_squares([(0, 1.0), (1, 2.0)]) == (0.0, 0.0)


def test_a_steady_growth_is_a_leak_with_its_rate_and_time_to_the_cap():
    rng = random.Random(1)
    det = LeakDetector(window_s=600, min_samples=12, min_mib_per_h=20, min_r2=0.8,
                       horizon_s=1800)
    for i in range(121):                       # 10 min at 5 s, +60 MiB/h, ±0.2 MiB noise
        t = 5.0 * i
        det.add("bot", 42, t, int((100 + 60 * t / 3600 + rng.uniform(-0.2, 0.2)) * MiB))
    report = det.check("bot", 110 * MiB, 500 * MiB, 600.0)
    assert report is not None and report.program == "bot" and report.pid == 42
    assert report.growth_mib_per_h == pytest.approx(60, rel=0.05)
    assert report.r2 > 0.95
    assert report.eta_s == pytest.approx(390 / 60 * 3600, rel=0.05)     # 6.5 h to the cap
    assert report.severity == "warning"                                 # past the horizon
    close = det.check("bot", 480 * MiB, 500 * MiB, 600.0)
    assert close is not None and close.severity == "critical"           # 20 min to the cap
    det.add("bot", 43, 605.0, 50 * MiB)                                 # a new pid: afresh
    assert det.check("bot", 50 * MiB, 500 * MiB, 605.0) is None


def test_start_up_growth_and_noise_are_no_leak():
    rng = random.Random(2)
    det = LeakDetector(600, 12, 20, 0.8, 1800)
    for i in range(121):                       # a model loaded in the first 20 s, then flat
        t = 5.0 * i
        det.add("predictor", 7, t, int((min(t, 20) * 5 + 30 + rng.uniform(-1, 1)) * MiB))
        det.add("cache", 8, t, int((50 + rng.uniform(-3, 3)) * MiB))
    assert det.check("predictor", None, 500 * MiB, 600.0) is None
    assert det.check("cache", None, 300 * MiB, 600.0) is None
    short = LeakDetector(600, 12, 20, 0.8, 1800)
    for i in range(60):                        # a straight line, but only 5 minutes of it
        short.add("bot", 1, 5.0 * i, (100 + i) * MiB)
    assert short.check("bot", None, 500 * MiB, 300.0) is None


def guard(**kw) -> OomGuard:
    args = {"fraction": 0.9, "samples": 3, "cooldown_s": 600.0, "never": ["backtest"],
            "leaks": LeakDetector(600, 12, 20, 0.8, 1800)} | kw
    return OomGuard(**args)


def test_a_slice_over_the_fraction_for_n_samples_restarts_its_biggest_program():
    g = guard()
    control = [program("scheduler", "control", 11, 40 * MiB),
               program("monitor", "control", 12, 30 * MiB)]
    over = [slice_("control", 140 * MiB, cap=150 * MiB, programs=("scheduler", "monitor"))]
    under = [slice_("control", 100 * MiB, cap=150 * MiB, programs=("scheduler", "monitor"))]
    verdicts = [g.judge(sample(t, s, control)) for t, s in
                enumerate([over, over, under, over, over, over])]
    assert [len(v.restarts) for v in verdicts] == [0, 0, 0, 0, 0, 1]   # the run was broken
    r = verdicts[-1].restarts[0]
    assert (r.program, r.why, r.pid) == ("scheduler", "over_cap_fraction", 11)
    assert "≥ 90% of its cap 150 MiB for 3 samples" in r.message
    assert r.figures["cap_bytes"] == 150 * MiB
    # cooling down: the same program over again is held, once, not restarted
    again = [g.judge(sample(10 + t, over, control)) for t in range(6)]
    assert sum(len(v.restarts) for v in again) == 0
    assert [len(v.held) for v in again] == [0, 0, 1, 0, 0, 0]
    assert "restarted 7 s ago" in again[2].held[0].held


def test_batch_jobs_and_the_monitor_itself_are_never_restarted():
    g = guard(samples=1)
    v = g.judge(sample(0, [slice_("batch", 1500 * MiB, cap=1536 * MiB, programs=("backtest",))],
                       [program("backtest", "batch", 5, 1500 * MiB)]))
    assert not v.restarts and v.held[0].held == "in monitor.never_restart"
    v = g.judge(sample(0, [slice_("control", 149 * MiB, cap=150 * MiB)],
                       [program("monitor", "control", 6, 140 * MiB)]))
    assert not v.restarts and "does not restart itself" in v.held[0].held


def test_a_leak_reaching_the_cap_within_the_horizon_restarts_after_the_grace():
    g = guard(fraction=0.99, leaks=LeakDetector(60, 6, 20, 0.9, 1200), leak_grace_s=30)
    restarts = []
    for i in range(40):                       # +2 MiB a 5 s sample = 1440 MiB/h
        t = 5.0 * i
        mem = (100 + 2 * i) * MiB
        v = g.judge(sample(t, [slice_("bot", mem)], [program("bot", "bot", 9, mem, uptime=t)]))
        restarts += [(t, r) for r in v.restarts]
    (t, r), = restarts
    # judged once 30 s of grace and 90 % of the 60 s window have passed: at 85 s, 134 MiB of
    # 500 growing 0.4 MiB/s reaches the cap in 915 s, within the 1200 s horizon
    assert r.why == "leak" and t == 85.0
    assert r.figures["eta_s"] == pytest.approx(915, rel=0.01)
    assert r.figures["growth_mib_per_h"] == pytest.approx(1440, rel=0.01)
    assert "reaches its slice's cap in" in r.message


# --- PSI and sampling ----------------------------------------------------------------------
PSI = "some avg10=1.50 avg60=0.75 avg300=0.10 total=123456\n" \
      "full avg10=0.50 avg60=0.25 avg300=0.00 total=6543\n"


def test_pressure_files_parse():
    p = parse_pressure(PSI)
    assert p["some_avg10"] == 1.5 and p["full_avg60"] == 0.25 and p["some_total_us"] == 123456
    with pytest.raises(ValueError):
        parse_pressure("nonsense 1 2")
    assert parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")["some_avg10"] == 0
    host = host_pressure()                   # this machine has /proc/pressure
    if Path("/proc/pressure/memory").exists():
        assert host["memory"] is not None and "some_avg10" in host["memory"]


def mimic_v2(tmp_path: Path, pid: int):
    """A cgroup2 stand-in (as tests/test_cgroup_v2.py makes) with the bot slice populated
    the way the kernel would report it, ``pid`` inside."""
    root = tmp_path / "cg"
    base = root / "svc"
    base.mkdir(parents=True)
    for d in (root, base):
        (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (d / "cgroup.subtree_control").write_text("")
        (d / "cgroup.procs").write_text("")
    (tmp_path / "cgroup").write_text("0::/svc\n")
    (tmp_path / "mounts").write_text("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    backend = open_backend("bdt-test-v2", mounts_path=str(tmp_path / "mounts"),
                           proc_cgroup_path=str(tmp_path / "cgroup"), v2_root=root)
    bot = backend.root / "bot"
    bot.mkdir()
    files = {"cgroup.procs": f"{pid}\n", "memory.current": str(300 * MiB),
             "memory.peak": str(320 * MiB), "memory.max": str(500 * MiB),
             "memory.stat": f"anon {200 * MiB}\nfile {100 * MiB}\n",
             "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
             "cpu.stat": "usage_usec 5000000\nnr_throttled 4\nthrottled_usec 20000\n",
             "cpu.max": "max 100000", "memory.pressure": PSI,
             "cpu.pressure": "some avg10=7.00 avg60=1.00 avg300=0.00 total=99\n"}
    for name, text in files.items():
        (bot / name).write_text(text)
    (backend.root / "memory.stat").write_text(f"anon {250 * MiB}\nfile {120 * MiB}\n")
    (backend.root / "cgroup.procs").write_text("")
    return backend, bot


def supervisord_row(name: str, pid: int, state: str = "RUNNING") -> dict:
    now = int(time.time())
    return {"name": name, "group": "bitdaytrader", "statename": state, "pid": pid,
            "start": now - 100, "now": now, "exitstatus": 0, "spawnerr": ""}


def test_sampling_on_a_cgroup_v2_mimic_tree_reads_memory_cpu_and_pressure(tmp_path, cfg):
    backend, bot = mimic_v2(tmp_path, os.getpid())
    rows = [supervisord_row("bot", os.getpid()), supervisord_row("cache", 0, "STOPPED")]
    sampler = Sampler(cfg, load_table(cfg), backend, lambda: rows)
    first = sampler.sample()
    (bot / "cpu.stat").write_text("usage_usec 5500000\nnr_throttled 6\nthrottled_usec 1\n")
    time.sleep(0.2)
    s = sampler.sample()
    b = s.slices["bot"]
    assert (b.source, b.memory_process, b.memory_page_cache) == ("cgroup", 200 * MiB, 100 * MiB)
    assert b.oom_kills == 1 and b.cpu_throttled == 6 and b.memory_peak == 320 * MiB
    assert first.slices["bot"].cpu_cores is None
    assert b.cpu_cores == pytest.approx(0.5 / s.interval_s, rel=0.01)
    assert b.pressure["memory"]["some_avg10"] == 1.5
    assert b.pressure["cpu"]["some_avg10"] == 7.0 and b.pressure["io"] is None
    assert s.programs["bot"].confined and s.programs["bot"].memory_process > 0
    assert s.programs["cache"].pid is None and not s.programs["cache"].confined
    assert s.tree.memory_process == 250 * MiB          # the tree's own figure, all confined
    assert s.slices["history"].memory_process == 0     # nothing runs there
    assert cgroup_pressure({}) == {"memory": None, "cpu": None, "io": None}


ALLOCATE = "import sys, time; x = b'x' * (int(sys.argv[1]) << 20); time.sleep(60)"


def test_without_cgroups_a_slice_is_its_programs_rss(cfg):
    child = subprocess.Popen([sys.executable, "-c", ALLOCATE, "64"])
    try:
        rows = [supervisord_row("predictor", child.pid)]
        sampler = Sampler(cfg, load_table(cfg), NullBackend("t", "no cgroups here"),
                          lambda: rows)
        wait_until(lambda: (sampler.sample().slices["predictor"].memory_process or 0)
                   > 64 * MiB, what="the child's 64 MiB")
        s = sampler.sample()
        p = s.slices["predictor"]
        assert p.source == "rss" and p.oom_kills is None and p.memory_page_cache is None
        assert not s.enforced and not s.programs["predictor"].confined
        assert s.tree.source == "rss" and s.tree.memory_process == p.memory_process
    finally:
        stop_process(child)


class FakeSupervisord:
    """supervisord's table and its stop/start over "XML-RPC", for one program run as a real
    child process: a stop ends the child, a start runs a fresh one."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name, self.argv, self.calls = name, argv, []
        self.child = subprocess.Popen(argv)
        self.supervisor = self

    def rows(self) -> list[dict]:
        return [supervisord_row(self.name, self.child.pid)]

    def stopProcess(self, name: str, wait: bool) -> bool:  # noqa: N802 - supervisord's name
        self.calls.append(("stop", name))
        stop_process(self.child)
        return True

    def startProcess(self, name: str, wait: bool) -> bool:  # noqa: N802
        self.calls.append(("start", name))
        self.child = subprocess.Popen(self.argv)
        return True


def test_not_enforced_the_monitor_restarts_a_program_over_budget_by_its_rss(var_dir):
    """In process, cgroups not enforced (NullBackend): the cache slice (300 MiB) holds a real
    process of 200 MiB RssAnon; at 50 % for 2 samples the monitor restarts it — even with
    another step of its loop failing at every sample."""
    cfg = load_config({"BDT_VAR": str(var_dir), "BDT_MONITOR__RESTART_FRACTION": "0.5",
                       "BDT_MONITOR__RESTART_SAMPLES": "2"})
    fake = FakeSupervisord("cache", [sys.executable, "-c", ALLOCATE, "200"])
    svc = MonitorService(cfg, backend=NullBackend("t", "no cgroups here"),
                         processes=fake.rows, connect=lambda: fake)

    def broken(*args: object) -> bool:
        raise RuntimeError("a bug in one step")

    svc.snapshot.write = broken          # type: ignore[method-assign] - must not stop restarts
    try:
        first = fake.child.pid
        wait_until(lambda: (svc.tick() or svc.restarts_done["cache"]) > 0, timeout=20,
                   interval=0.1, what="a restart")
        wait_until(lambda: not svc.restarter.busy("cache"), what="the restart to finish")
        svc.tick()
        assert fake.calls == [("stop", "bitdaytrader:cache"), ("start", "bitdaytrader:cache")]
        assert fake.child.pid != first
        alert, = svc.op_alerts({"since": 0, "limit": 10, "kind": "restart"})
        assert alert["subject"] == "cache" and alert["figures"]["why"] == "over_cap_fraction"
        assert alert["figures"]["source"] == "rss"
        assert alert["figures"]["slice_memory_bytes"] >= 150 * MiB
        assert not svc.op_alerts({"since": 0, "limit": 10, "kind": "crash"})   # it was us
    finally:
        svc.close()
        stop_process(fake.child)


def test_an_oom_kill_in_a_slice_made_after_the_monitor_started_is_alerted(var_dir):
    """The batch slice's cgroup is made by its first job: its first count is all new kills
    (before, the monitor took it for a baseline and said nothing); a count the monitor finds
    at its start is a baseline."""
    cfg = load_config({"BDT_VAR": str(var_dir)})
    svc = MonitorService(cfg, backend=NullBackend("t", "no cgroups here"),
                         processes=lambda: [], connect=lambda: None)
    try:
        svc._judge_programs(sample(0.0, [slice_("batch", None, oom=None),
                                         slice_("bot", 100 * MiB, oom=3)], []))
        svc._judge_programs(sample(1.0, [slice_("batch", 90 * MiB, oom=1),
                                         slice_("bot", 100 * MiB, oom=3)], []))
        alerts = svc.op_alerts({"since": 0, "limit": 10, "kind": "oom_kill"})
        assert [(a["subject"], a["figures"]["new"]) for a in alerts] == [("batch", 1)]
    finally:
        svc.close()


# --- the record: history and alerts --------------------------------------------------------
def test_history_is_downsampled_per_step_and_pruned(tmp_path):
    down = Downsampler(step_s=60)
    rows = []
    for i, mem in enumerate([100, 300, 200, 50]):          # 3 samples in one minute, 1 after
        s = sample(600.0 + 25 * i, [slice_("bot", mem * MiB, oom=i)],
                   [program("bot", "bot", 9, mem * MiB)], tree_memory=mem * MiB)
        rows += down.add(s)
    assert {(r[1], r[2]) for r in rows} == {("bot", "slice"), ("bot", "program"),
                                            ("bitdaytrader", "tree")}
    by = {(r[1], r[2]): r for r in rows}
    bot = by[("bot", "slice")]
    assert bot[0] == 600_000 and bot[3] == 300 * MiB and bot[4] == 200 * MiB
    assert bot[8] == 2                                      # the step's last OOM count
    last = down.flush()                                     # the step of the 4th sample
    assert {r[0] for r in last} == {660_000} and len(last) == 3
    assert not down.flush()
    db = MonitorDB(tmp_path / "monitor.db", history_days=7, alert_days=90)
    db.add_history(rows + last)
    got = db.history("bot")
    assert sorted((r["ts"], r["kind"], r["memory_process_max"]) for r in got) == [
        (600_000, "program", 300 * MiB), (600_000, "slice", 300 * MiB),
        (660_000, "program", 50 * MiB), (660_000, "slice", 50 * MiB)]
    assert db.history("bot", since_ms=660_000, limit=5)[0]["ts"] == 660_000
    db.add_alert(1, "crash", "warning", "bot", "old", {}, True)
    assert db.prune(8 * 86_400_000) == 6                    # history past 7 days; alerts kept
    assert db.history("bot") == [] and db.history("bitdaytrader") == []
    assert len(db.alerts()) == 1
    db.close()


def test_a_corrupt_database_is_moved_aside_and_the_monitor_goes_on_durably(tmp_path):
    """monitor.db is derived (stores.py): a corrupt one is kept aside, never deleted, and a
    new one takes this run's alerts; the error names both (the monitor raises it)."""
    path = tmp_path / "monitor.db"
    corrupt = b"SQLite format 3\x00" + os.urandom(4096)
    path.write_bytes(corrupt)
    db = MonitorDB(path, 7, 90)
    [aside] = list(tmp_path.glob("monitor.db.corrupt-*"))
    assert f"moved aside to {aside}" in db.error and aside.read_bytes() == corrupt
    db.add_alert(1, "monitor", "warning", "x", "y", {}, True)
    db.close()
    again = MonitorDB(path, 7, 90)
    assert again.error == "" and again.alerts()[0]["message"] == "y"
    again.close()


def test_a_full_disk_loses_records_not_the_watchdog(tmp_path):
    """SQLite's max_page_count makes the database "full" as a full disk would: alerts are
    still logged and notified, history rows are counted as lost, nothing raises."""
    db = MonitorDB(tmp_path / "monitor.db", 7, 90)
    pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
    db.conn.execute(f"PRAGMA max_page_count = {pages}")
    sent: list[dict] = []
    book = AlertBook(db, 0, webhook=Sent(sent))      # type: ignore[arg-type]
    for _ in range(50):
        book.take(alert("crash", "bot", "x" * 2000))
    assert db.write_failures > 0 and len(sent) == 50
    assert any(a["id"] == 0 for a in book.recent)
    before = db.write_failures
    db.add_history([(ts, "bot" * 300, "slice", *([1] * 13)) for ts in range(200)])
    db.add_mode(0, "critical", "normal", "x" * 8000, None, None)
    assert db.write_failures == before + 2
    db.conn.execute("PRAGMA max_page_count = 1000000")
    db.add_mode(1, "normal", "critical", "room again", None, None)
    assert db.modes()[-1]["reason"] == "room again"
    db.close()


def alert(kind: str, subject: str, message: str, source: str = "monitor", **figures) -> dict:
    """A checked alert event of ``kind``, its declared figures filled in where not given."""
    plain = {str: "x", int: 1, float: 1.0}
    for name, types in ALERT_KINDS[kind].fields.items():
        figures.setdefault(name, plain[types[0] if isinstance(types, tuple) else types])
    return alert_event(source, kind, subject, message, **figures)


class Sent:
    """A webhook that keeps what it was given."""

    def __init__(self, into: list[dict]) -> None:
        self.send = into.append


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook_server():
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", Hook.received
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_webhook_receives_one_alert_per_kind_within_the_rate_limit(tmp_path,
                                                                         webhook_server):
    url, received = webhook_server
    clock = [1000.0]
    db = MonitorDB(tmp_path / "monitor.db", 7, 90)
    hook = Webhook(url, timeout_s=2)
    book = AlertBook(db, min_interval_s=300, webhook=hook, clock=lambda: clock[0])
    for i in range(3):
        book.take(alert("mode", "bitdaytrader", f"mode change {i}", i=i))
        book.take(alert("restart", f"prog{i}", "restarted", i=i))
        clock[0] += 10
    book.take(alert("leak", "bot", "grows", growth_mib_per_h=30.0))
    wait_until(lambda: len(received) >= 3, what="three webhook posts")
    time.sleep(0.3)                                        # nothing more arrives
    assert sorted(a["kind"] for a in received) == ["leak", "mode", "restart"]
    mode = next(a for a in received if a["kind"] == "mode")
    assert mode["message"] == "mode change 0" and mode["source"] == "bitdaytrader"
    assert mode["severity"] == "warning" and mode["figures"]["i"] == 0 and mode["time"]
    assert mode["sources"] == ["monitor"]
    stored = db.alerts()
    assert len(stored) == 7 and sum(a["notified"] for a in stored) == 3
    clock[0] += 300                                        # the interval has passed
    book.take(alert("mode", "bitdaytrader", "mode change 3", severity="critical"))
    wait_until(lambda: len(received) == 4, what="the fourth post")
    assert received[-1]["figures"]["held_back_before"] == 2
    assert hook.stats()["sent"] == 4 and hook.stats()["failed"] == 0
    assert hook.stats()["url"].endswith("/…") and "/hook" not in hook.stats()["url"]
    assert [a["kind"] for a in book.active()] == ["mode", "restart", "mode", "restart", "mode",
                                                   "restart", "leak", "mode"]
    hook.close()
    db.close()


def test_a_dead_webhook_is_counted_and_never_blocks(tmp_path):
    db = MonitorDB(tmp_path / "monitor.db", 7, 90)
    hook = Webhook("http://127.0.0.1:9/nothing-listens", timeout_s=0.5)
    book = AlertBook(db, 0, webhook=hook)
    started = time.monotonic()
    book.take(alert("crash", "bot", "gone", severity="critical"))
    assert time.monotonic() - started < 0.1
    wait_until(lambda: hook.failed == 1, what="the failure to be counted")
    assert db.alerts()[0]["notified"]
    hook.close()
    db.close()


# --- metrics, declarations -----------------------------------------------------------------
def test_the_metrics_endpoint_answers_with_slices_programs_mode_and_services():
    s = sample(0.0, [slice_("bot", 120 * MiB, oom=2)], [program("bot", "bot", 9, 110 * MiB)],
               tree_memory=700 * MiB, cpu_cores=0.25)
    s.host_pressure = {"memory": parse_pressure(PSI), "cpu": None, "io": None}
    view = MetricsView(s, "low_resource", {"bot": {"bars_published": 12, "equity": 10010.5,
                                                   "bar_to_decision": {"p99_us": 1500.0}},
                                           "predictor": {"error": "timeout"}},
                       {"mode": 2}, {"bot": 1})
    server = MetricsServer(0, MonitorCollector(lambda: view))
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics",
                                      timeout=5).read().decode()
    finally:
        server.close()
    for line in ('bdt_mode{mode="low_resource"} 1.0', "bdt_mode_level 1.0",
                 'bdt_slice_memory_process_bytes{slice="bot"} 1.2582912e+08',
                 'bdt_slice_memory_process_bytes{slice="bitdaytrader"} 7.340032e+08',
                 'bdt_slice_oom_kills_total{slice="bot"} 2.0',
                 'bdt_program_memory_process_bytes{program="bot"} 1.1534336e+08',
                 "bdt_tree_cpu_percent_of_quota 25.0", "bdt_bot_bars_published_total 12.0",
                 "bdt_bot_equity 10010.5", "bdt_bot_bar_to_decision_p99_seconds 0.0015",
                 'bdt_service_up{service="predictor"} 0.0', 'bdt_alerts_total{kind="mode"} 2.0',
                 'bdt_monitor_restarts_total{program="bot"} 1.0',
                 'bdt_host_pressure_avg10_percent{kind="some",resource="memory"} 1.5'):
        assert line in text, line


def test_the_monitors_ops_methods_verbs_and_docs_agree():
    assert op_problems([MonitorService], [monitor.OPS], VERBS,
                       (REPO / "docs" / "bus.md").read_text()) == []
    assert {"alerts", "mode", "monitor sample", "monitor history"} <= set(VERBS)


def test_sigterm_stops_a_monitor_process_cleanly(var_dir):
    """The real entry point: it starts without supervisord (alerting that it is unreachable),
    answers, and exits 0 on SIGTERM leaving no socket behind."""
    from tests.helpers import start_module

    proc = start_module("services.monitor", var_dir, BDT_MONITOR__SAMPLE_INTERVAL_S="0.2")
    try:
        from shared.bus.client import BusClient, wait_for

        cfg = load_config({"BDT_VAR": str(var_dir)})
        wait_for("monitor", cfg, timeout_s=15)
        with BusClient("monitor", cfg, timeout_ms=2000) as client:
            wait_until(lambda: client.call("sample") is not None, what="a sample")
            assert client.call("status")["mode"] == "normal"
            kinds = [a["kind"] for a in client.call("alerts", kind="supervisor")]
        assert kinds == ["supervisor"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not (var_dir / "run" / "monitor.sock").exists()
    assert (var_dir / "data" / "monitor.db").exists()


def test_stop_process_takes_not_running_as_stopped_and_raises_the_rest():
    """One rule for the monitor's restarts and `bdt dashboard stop`: NOT_RUNNING is not an
    error (the program is already down), every other fault is."""
    import xmlrpc.client

    from shared.resources.supervisor import stop_process as stop_program

    class Rpc:
        def __init__(self, fault: str | None) -> None:
            self.fault, self.supervisor = fault, self

        def stopProcess(self, name: str, wait: bool) -> bool:  # noqa: N802 - supervisord's
            if self.fault:
                raise xmlrpc.client.Fault(10, f"{self.fault}: {name}")
            return True

    assert stop_program(Rpc(None), "bitdaytrader:dashboard") is True
    assert stop_program(Rpc("NOT_RUNNING"), "bitdaytrader:dashboard") is False
    with pytest.raises(xmlrpc.client.Fault, match="BAD_NAME"):
        stop_program(Rpc("BAD_NAME"), "bitdaytrader:nope")
