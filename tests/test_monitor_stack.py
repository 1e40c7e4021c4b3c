"""The monitor in a whole stack under the real supervisord (tests/stack.py), with test-sized
settings (``BDT_MONITOR__…``) and two test programs added to a copy of supervisord.conf and of
the allocation table: ``hog`` (in the batch slice) holds as many MiB as a file says, and
``leaker`` (in a ``leaktest`` slice capped at 256 MiB) grows steadily.

- a hog in the batch slice drives the mode to low_resource, then critical — the bot vetoes
  entries, the hog (a batch program) is stopped — and back to normal, without flapping;
- a leaking program is restarted before its cap (real kernel cgroups);
- the same with cgroups not enforced (the tree cannot be created), from RssAnon;
- the metrics endpoint, the cache snapshot, the webhook's one alert per kind, the CLI.
"""

from __future__ import annotations

import collections
import json
import socket
import sqlite3
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from shared.bus.cache_client import CacheClient
from shared.config import load_config
from shared.models.training import train
from tests.cgroup_helpers import require_writable_cgroups
from tests.helpers import REPO, wait_until, webhook_receiver
from tests.stack import AUTOSTART, Stack

MiB = 1 << 20

PROGRAMS = '''\
"""Test programs for the monitor: ``hog FILE`` holds as many MiB as FILE says; ``leak STEP
EVERY MAX`` adds STEP MiB every EVERY seconds up to MAX MiB, then holds."""
import signal, sys, time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
chunks = []
if sys.argv[1] == "hog":
    while True:
        try:
            want = int(open(sys.argv[2]).read().strip() or 0)
        except (OSError, ValueError):
            want = 0
        while len(chunks) < want:
            chunks.append(b"\\x01" * (1 << 20))
        del chunks[want:]
        time.sleep(0.05)
step, every, most = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
while True:
    if (len(chunks) + 1) * step <= most:
        chunks.append(b"\\x02" * (step << 20))
    time.sleep(every)
'''

PROGRAM_SECTION = """
[program:{name}]
command=bdt cgexec --program %(program_name)s -- python {script} {args}
directory=%(here)s
autostart=false
autorestart=false
startsecs=1
startretries=0
stopsignal=TERM
stopwaitsecs=5
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=%(here)s/var/log/{name}.log
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def monitor_stack(programs: dict[str, str], **env: str) -> Stack:
    """A Stack whose supervisord.conf and allocation table are the real ones plus the test
    programs hog (in the batch slice, reading var/hog_mib) and leaker (in leaktest, with the
    arguments ``programs["leaker"]``)."""
    stack = Stack(**env)
    script = stack.dir / "monitor_programs.py"
    script.write_text(PROGRAMS)
    table = (REPO / "cgroups" / "allocation.toml").read_text()
    table = table.replace('programs = ["backtest", "walkforward"]',
                          'programs = ["backtest", "walkforward", "hog"]')
    assert '"hog"' in table
    table += '\n[slices.leaktest]\nmemory_max = "256M"\nswap = "0"\nprograms = ["leaker"]\n'
    (stack.dir / "allocation.toml").write_text(table)
    conf = (REPO / "supervisord.conf").read_text()
    group = next(line for line in conf.splitlines() if line.startswith("programs="))
    conf = conf.replace(group, group + ",hog,leaker")
    programs = {"hog": f"hog {stack.var / 'hog_mib'}", **programs}
    for name in ("hog", "leaker"):
        conf += PROGRAM_SECTION.format(name=name, script=script, args=programs[name])
    stack.conf.unlink()                       # the symlink to the real one
    stack.conf.write_text(conf)
    stack.env["BDT_CGROUPS__ALLOCATION"] = str(stack.dir / "allocation.toml")
    stack.cfg = load_config({k: v for k, v in stack.env.items() if k.startswith("BDT_")})
    return stack




# trade often, whatever the model says: an SMA 2/3 crossover enters every few bars (the model's
# long signals on the sample market are rare, and a spot account sells no short)
TRADING = {"BDT_STRATEGY__NAME": "sma_cross", "BDT_STRATEGY__SMA_FAST": "2",
           "BDT_STRATEGY__SMA_SLOW": "3", "BDT_STRATEGY__SMA_SIZE": "0.01",
           "BDT_PAPER__FEE_TAKER": "0",
           "BDT_PAPER__FEE_MAKER": "0", "BDT_PAPER__SPREAD": "0", "BDT_PAPER__SLIPPAGE": "0"}
LOW, HIGH, CRITICAL = 800, 1000, 1200          # MiB of the tree's process memory
MONITOR = {
    "BDT_MONITOR__SAMPLE_INTERVAL_S": "0.5", "BDT_MONITOR__HISTORY_STEP_S": "2",
    "BDT_MONITOR__LOW_MEMORY_MB": str(LOW), "BDT_MONITOR__ALERT_MEMORY_MB": str(HIGH),
    "BDT_MONITOR__CRITICAL_MEMORY_MB": str(CRITICAL),
    # CPU out of the way: this test is about memory (tests/test_monitor_units.py drives CPU)
    "BDT_MONITOR__LOW_CPU_PCT": "400", "BDT_MONITOR__ALERT_CPU_PCT": "450",
    "BDT_MONITOR__CRITICAL_CPU_PCT": "500",
    "BDT_MONITOR__ENTER_SAMPLES": "2", "BDT_MONITOR__EXIT_SAMPLES": "16",
    "BDT_MONITOR__STOP_IN_CRITICAL": "hog", "BDT_MONITOR__CRITICAL_STOP_AFTER_S": "1",
    "BDT_MONITOR__NEVER_RESTART": "backtest,walkforward,hog",
    "BDT_MONITOR__RESTART_FRACTION": "0.95", "BDT_MONITOR__RESTART_SAMPLES": "3",
    # a leak: 1 MiB/s or more, straight (R² ≥ 0.9) over 5 s, judged after 8 s of uptime,
    # that reaches the cap within a minute
    "BDT_MONITOR__LEAK_WINDOW_S": "5", "BDT_MONITOR__LEAK_MIN_SAMPLES": "8",
    "BDT_MONITOR__LEAK_MIN_MIB_PER_H": "3600", "BDT_MONITOR__LEAK_MIN_R2": "0.9",
    "BDT_MONITOR__LEAK_HORIZON_S": "60", "BDT_MONITOR__LEAK_GRACE_S": "8",
    "BDT_MONITOR__STATUS_INTERVAL_S": "1", "BDT_MONITOR__SNAPSHOT_TTL_S": "5",
}


@pytest.fixture(scope="module")
def trading():
    """A trading stack (replay at 600×: a bar every 100 ms) with a webhook and metrics."""
    require_writable_cgroups()
    with webhook_receiver() as hook:
        port = free_port()
        stack = monitor_stack(
            {"leaker": "leak 4 0.5 1000"},
            BDT_MARKET__SAMPLE_BARS="2500", BDT_MARKET__REPLAY_SPEED="600",
            BDT_BOT__WAIT_SUBSCRIBERS="2", BDT_MODEL__TRAIN_BARS="3000",
            BDT_MODEL__MIN_TRAIN_BARS="500", BDT_MONITOR__METRICS_PORT=str(port),
            BDT_MONITOR__WEBHOOK_URL=f"http://127.0.0.1:{hook.server_address[1]}/alerts",
            **TRADING, **MONITOR)
        try:
            train(stack.cfg)
            stack.start().wait_running(AUTOSTART)
            stack.hog_file = stack.var / "hog_mib"      # type: ignore[attr-defined]
            stack.metrics_port = port                    # type: ignore[attr-defined]
            stack.webhook = hook                         # type: ignore[attr-defined]
            yield stack
        finally:
            stack.remove()


def mode(stack: Stack) -> str:
    return stack.call("monitor", "mode")["mode"]


def alerts(stack: Stack, kind: str = "") -> list[dict]:
    return stack.call("monitor", "alerts", kind=kind, limit=1000)


def test_a_hog_in_batch_drives_the_mode_up_and_back_and_the_bot_opens_nothing_while_critical(
        trading):
    stack = trading
    wait_until(lambda: stack.status("bot")["decisions"] > 30, timeout=60, what="trading")
    stack.hog_file.write_text("0")
    assert "started" in stack.ctl("start", "bitdaytrader:hog")
    wait_until(lambda: (stack.call("monitor", "sample") or {}).get("programs", {})
               .get("hog", {}).get("memory_process"), what="the hog sampled")
    s = stack.call("monitor", "sample")
    assert s["enforced"] and s["slices"]["batch"]["source"] == "cgroup"
    base = (s["memory_bytes"] - s["programs"]["hog"]["memory_process"]) // MiB
    assert base < LOW - 200, f"the stack alone uses {base} MiB: thresholds too low for it"
    assert mode(stack) == "normal"

    stack.hog_file.write_text(str(LOW + 100 - base))
    wait_until(lambda: mode(stack) == "low_resource", timeout=15, what="low_resource")
    wait_until(lambda: stack.status("bot")["risk"]["mode"] == "low_resource", what="bot low")

    stack.hog_file.write_text(str(CRITICAL + 100 - base))
    wait_until(lambda: stack.status("bot")["risk"]["mode"] == "critical", timeout=15,
               what="the bot to hear of critical mode")
    critical_from = stack.status("bot")["last_bar"]["ts"]
    assert mode(stack) in ("critical", "normal")
    # critical cancels batch work: the hog, no job of the scheduler's, still runs 1 s into
    # critical mode and is stopped through supervisord, so memory falls
    wait_until(lambda: "STOPPED" in stack.ctl("status", "bitdaytrader:hog"), timeout=15,
               what="the hog stopped")
    wait_until(lambda: stack.status("bot")["risk"]["mode"] == "normal", timeout=30,
               what="the bot back to normal")
    normal_from = stack.status("bot")["last_bar"]["ts"]
    assert mode(stack) == "normal"

    # up a level at a time, then down — straight to normal, or through low_resource when a
    # sample caught the hog's memory half freed — and never up again: no flapping
    changes = [(c["old"], c["mode"]) for c in stack.call("monitor", "mode")["changes"]]
    assert changes[:2] == [("normal", "low_resource"), ("low_resource", "critical")]
    assert changes[2:] in ([("critical", "normal")],
                           [("critical", "low_resource"), ("low_resource", "normal")])
    stop, = alerts(stack, "critical_stop")
    assert stop["subject"] == "hog" and "critical resource mode" in stop["message"]
    assert [a["subject"] for a in alerts(stack, "high_memory")] == [stack.tree]
    assert not alerts(stack, "crash")                 # the stop was the monitor's own
    modes = alerts(stack, "mode")
    assert [a["figures"]["new"] for a in modes] == [new for _, new in changes]
    assert [a["notified"] for a in modes] == [True] + [False] * (len(modes) - 1)  # 1 per 300 s

    # decided after the bot knew of critical mode and before it knew of normal again: only
    # holds and exits (target 0), and at least one entry vetoed; outside it, entries happen
    with closing(sqlite3.connect(stack.var / "data" / "trading.db")) as con:
        decided = con.execute("SELECT action, target_qty, reason FROM decisions WHERE "
                              "bar_ts > ? AND bar_ts < ?", (critical_from, normal_from)).fetchall()
        opened = con.execute("SELECT count(*) FROM decisions WHERE action != 'hold' AND "
                             "target_qty != 0").fetchone()[0]
    assert len(decided) > 20
    assert all(action == "hold" or target == 0 for action, target, _ in decided)
    assert any("critical resource mode" in reason for _, _, reason in decided)
    assert opened > 0


def test_a_leaking_program_is_restarted_before_its_cap(trading):
    stack = trading
    assert "started" in stack.ctl("start", "bitdaytrader:leaker")
    first = stack.pids()["leaker"]
    try:
        wait_until(lambda: alerts(stack, "restart"), timeout=40, interval=0.2,
                   what="the leaker restarted")
        wait_until(lambda: stack.pids().get("leaker", first) != first, what="its new pid")
        restart, = alerts(stack, "restart")
        s = stack.call("monitor", "sample")
    finally:
        stack.ctl("stop", "bitdaytrader:leaker")
    assert restart["subject"] == "leaker" and restart["figures"]["why"] == "leak"
    assert restart["figures"]["pid"] == first
    assert restart["figures"]["growth_mib_per_h"] > 3600
    assert restart["figures"]["memory_bytes"] < 200 * MiB            # well before 256 MiB
    assert restart["figures"]["cap_bytes"] == 256 * MiB
    assert s["slices"]["leaktest"]["oom_kills"] == 0                 # the kernel killed nothing
    assert s["slices"]["leaktest"]["memory_peak"] < 256 * MiB
    assert stack.status("monitor")["restarts_done"] == {"leaker": 1}   # and nothing else


def test_metrics_snapshot_webhook_and_cli(trading):
    stack = trading
    url = f"http://127.0.0.1:{stack.metrics_port}/metrics"

    def scrape() -> str:
        return urllib.request.urlopen(url, timeout=5).read().decode()

    wait_until(lambda: "bdt_bot_bars_published_total" in scrape()
               and "bdt_predictor_inference_p99_seconds " in scrape(), timeout=15,
               what="the services' figures in the metrics")
    text = scrape()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line and not line.startswith("#")}
    assert values['bdt_mode{mode="normal"}'] == 1.0
    assert 0 < values['bdt_slice_memory_process_bytes{slice="bot"}'] < 500 * MiB
    assert values['bdt_slice_memory_cap_bytes{slice="bot"}'] == 500 * MiB
    assert values['bdt_slice_oom_kills_total{slice="bot"}'] == 0
    assert values['bdt_program_running{program="bot",state="RUNNING"}'] == 1
    assert values["bdt_bot_bars_published_total"] > 30
    assert values["bdt_bot_equity"] > 0
    assert values['bdt_service_up{service="predictor"}'] == 1
    assert f'bdt_slice_cpu_seconds_total{{slice="{stack.tree}"}}' in values

    cache = CacheClient(stack.cfg)
    try:
        wait_until(lambda: cache.get("monitor:mode") is not None, what="the snapshot")
        assert cache.get("monitor:mode")["mode"] == "normal"
        snap = cache.get("monitor:sample")
        assert snap["programs"]["bot"]["state"] == "RUNNING" and snap["enforced"]
        assert snap["slices"]["bot"]["cap"] == 500 * MiB
        assert 0 < cache.ttl("monitor:sample") <= 5
        assert isinstance(cache.get("monitor:alerts"), list)
    finally:
        cache.close()

    kinds = collections.Counter(a["kind"] for a in stack.webhook.received)
    assert kinds["mode"] == 1 and all(n == 1 for n in kinds.values()), kinds
    sent_mode = next(a for a in stack.webhook.received if a["kind"] == "mode")
    assert sent_mode["figures"]["new"] == "low_resource"

    out = stack.bdt("alerts", "--kind", "mode")
    assert out.returncode == 0, out.stderr
    assert "low_resource → critical" in out.stdout and "(held)" in out.stdout
    out = stack.bdt("mode")
    assert out.returncode == 0 and "resource mode normal" in out.stdout, out.stderr
    assert "low_resource → critical" in out.stdout and "→ normal" in out.stdout
    out = stack.bdt("monitor", "sample")
    assert out.returncode == 0 and "leaktest" in out.stdout and "cgroups enforced" in out.stdout
    rows = json.loads(stack.bdt("monitor", "history", "batch", "--json").stdout)
    assert rows and max(r["memory_process_max"] or 0 for r in rows) > LOW * MiB // 2


def test_not_enforced_a_program_over_budget_is_restarted_from_its_rss():
    """The tree cannot be created (its name points under a cgroup that does not exist), so
    every program runs unconfined: the monitor judges the leaktest slice by its programs'
    RssAnon and restarts the leaker (200 MiB, over 60 % of 256 MiB) through supervisord."""
    stack = monitor_stack({"leaker": "leak 50 0.2 200"}, BDT_MARKET__SAMPLE_BARS="200",
                          BDT_BOT__WAIT_SUBSCRIBERS="0", BDT_MONITOR__SAMPLE_INTERVAL_S="0.5",
                          BDT_MONITOR__RESTART_FRACTION="0.6",
                          BDT_MONITOR__RESTART_SAMPLES="3")
    nowhere = f"{stack.tree}-missing/{stack.tree}"
    stack.env["BDT_CGROUPS__TREE"] = nowhere
    stack.cfg = load_config({k: v for k, v in stack.env.items() if k.startswith("BDT_")})
    try:
        stack.start().wait_running(AUTOSTART)
        assert "started" in stack.ctl("start", "bitdaytrader:leaker")
        first = stack.pids()["leaker"]
        wait_until(lambda: alerts(stack, "restart"), timeout=30, interval=0.2,
                   what="the leaker restarted")
        wait_until(lambda: stack.pids().get("leaker", first) != first, what="its new pid")
        restart, = alerts(stack, "restart")
        s = stack.call("monitor", "sample")
        stack.ctl("stop", "bitdaytrader:leaker")
        assert restart["subject"] == "leaker" and restart["figures"]["why"] == "over_cap_fraction"
        assert restart["figures"]["source"] == "rss"
        assert restart["figures"]["slice_memory_bytes"] >= 0.6 * 256 * MiB
        assert not s["enforced"] and "not in their slice" in s["cgroup_reason"]
        assert s["slices"]["bot"]["source"] == "rss" and not s["programs"]["bot"]["confined"]
        assert s["slices"]["leaktest"]["oom_kills"] is None      # no cgroup to count them
        assert stack.status("monitor")["restarts_done"] == {"leaker": 1}
        log = Path(stack.var / "log" / "leaker.log").read_text()
        assert "NOT enforced" in log                             # cgexec said so
    finally:
        stack.remove()
