"""Every declared alert kind reaches the operator (issue 24): on a whole stack under the real
supervisord (tests/stack.py) with real cgroups, each kind is made to happen at its source, and
arrives in ``bdt alerts`` (run as a user types it), at a webhook receiver (an http.server on
127.0.0.1) and in the metrics (``bdt_alerts_total{kind}``).

``test_every_declared_kind_has_its_test`` fails when a kind is declared in
shared/protocol/alerts.py without a way to make it happen here (``PROVOKE``).

Test programs are added to a copy of supervisord.conf and of the allocation table: ``hog``
(slice hogtest) holds as many MiB as a file says; ``fat`` and ``flaky`` (256 MiB slices) too,
``flaky`` exiting at once when its ``.fail`` file exists; ``leaker`` (a 1 GiB slice) grows
8 MiB/s to 120 MiB; ``spin`` is a busy loop; and ``backtest`` allocates 400 MiB in a batch
slice capped at 100 MiB, so the scheduler's job is OOM-killed. The monitor's own kinds come
from its real detection; the bot's from the real engine's alert records published by the bot
service's own code (the conditions that raise them are tests/test_live_venue.py's); the
scheduler's from a real job.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
import types
import urllib.request
from collections.abc import Callable
from functools import cache

import pytest

from services.bot.service import BotService
from shared.bus.streams import Publisher
from shared.config import load_config
from shared.protocol.alerts import KINDS
from shared.storage.trading_state import TradingDB
from shared.trading.engine import TradingEngine
from shared.trading.types import Balance
from tests.cgroup_helpers import require_writable_cgroups
from tests.helpers import REPO, wait_until, webhook_receiver
from tests.stack import AUTOSTART, Stack
from tests.test_monitor_stack import CRITICAL, HIGH, LOW, PROGRAM_SECTION, free_port
from tests.test_monitor_stack import MONITOR as STACK_MONITOR

MiB = 1 << 20

PROGRAMS = '''\
"""``hold FILE``: hold as many MiB as FILE says (exit 1 at once when FILE.fail exists);
``leak STEP EVERY MOST``: STEP MiB every EVERY s up to MOST; ``spin``: a busy loop;
``oom MIB``: allocate MIB at once."""
import os, signal, sys, time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
chunks = []
what = sys.argv[1]
if what == "hold":
    if os.path.exists(sys.argv[2] + ".fail"):
        sys.exit(1)
    while True:
        try:
            want = int(open(sys.argv[2]).read().strip() or 0)
        except (OSError, ValueError):
            want = 0
        while len(chunks) < want:
            chunks.append(b"\\x01" * (1 << 20))
        del chunks[want:]
        time.sleep(0.05)
elif what == "leak":
    step, every, most = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    while True:
        if (len(chunks) + 1) * step <= most:
            chunks.append(b"\\x02" * (step << 20))
        time.sleep(every)
elif what == "spin":
    while True:
        pass
elif what == "oom":
    for _ in range(int(sys.argv[2])):
        chunks.append(b"\\x03" * (1 << 20))
    time.sleep(60)
'''

# program → (slice, its cap, arguments of PROGRAMS)
TEST_PROGRAMS = {"hog": ("hogtest", "2G", "hold {var}/hog_mib"),
                 "fat": ("fattest", "256M", "hold {var}/fat_mib"),
                 "flaky": ("flakytest", "256M", "hold {var}/flaky_mib"),
                 "leaker": ("leaktest", "1G", "leak 2 0.25 120"),
                 "spin": ("spintest", "256M", "spin")}

# the monitor stack test's settings, but for what this test needs: CPU drives no mode, yet one
# busy loop (a core: 100 % of the tree's quota) is high_cpu; a leak restarts before a full cap;
# one rate-limit interval: each kind's first alert is sent, an OOM kill seen by the scheduler
# and the monitor within it is one alert
MONITOR = {**{k: v for k, v in STACK_MONITOR.items() if k != "BDT_MONITOR__SNAPSHOT_TTL_S"},
           "BDT_MONITOR__ALERT_CPU_PCT": "60", "BDT_MONITOR__EXIT_SAMPLES": "6",
           "BDT_MONITOR__RESTART_FRACTION": "0.6", "BDT_MONITOR__ALERT_MIN_INTERVAL_S": "120"}




def kinds_stack(port: int, webhook: str) -> Stack:
    """A Stack whose supervisord.conf and allocation table are the real ones plus the test
    programs, the batch slice capped at 100 MiB and ``backtest`` an allocation of 400 MiB."""
    stack = Stack(BDT_MARKET__SAMPLE_BARS="200", BDT_BOT__WAIT_SUBSCRIBERS="0",
                  BDT_MONITOR__METRICS_PORT=str(port), BDT_MONITOR__WEBHOOK_URL=webhook,
                  **MONITOR)
    script = stack.dir / "alert_programs.py"
    script.write_text(PROGRAMS)
    table = (REPO / "cgroups" / "allocation.toml").read_text()
    assert 'memory_max = "1.5G"' in table
    table = table.replace('memory_max = "1.5G"', 'memory_max = "100M"')
    conf = (REPO / "supervisord.conf").read_text()
    group = next(line for line in conf.splitlines() if line.startswith("programs="))
    conf = conf.replace(group, group + "," + ",".join(TEST_PROGRAMS))
    backtest = next(line for line in conf.split("[program:backtest]")[1].splitlines()
                    if line.startswith("command="))
    conf = conf.replace(backtest, "command=bdt cgexec --program %(program_name)s -- python "
                                  f"{script} oom 400", 1)
    for name, (slice_name, cap, args) in TEST_PROGRAMS.items():
        table += (f'\n[slices.{slice_name}]\nmemory_max = "{cap}"\nswap = "0"\n'
                  f'programs = ["{name}"]\n')
        conf += PROGRAM_SECTION.format(name=name, script=script,
                                       args=args.format(var=stack.var))
    (stack.dir / "allocation.toml").write_text(table)
    stack.conf.unlink()                       # the symlink to the real one
    stack.conf.write_text(conf)
    stack.env["BDT_CGROUPS__ALLOCATION"] = str(stack.dir / "allocation.toml")
    stack.cfg = load_config({k: v for k, v in stack.env.items() if k.startswith("BDT_")})
    return stack


@pytest.fixture(scope="module")
def stack():
    require_writable_cgroups()
    with webhook_receiver() as hook:
        port = free_port()
        s = kinds_stack(port, f"http://127.0.0.1:{hook.server_address[1]}/alerts")
        s.metrics_port = port                           # type: ignore[attr-defined]
        s.webhook = hook                                # type: ignore[attr-defined]
        for name in ("hog", "fat", "flaky"):
            (s.var / f"{name}_mib").write_text("0")
        try:
            s.start().wait_running(AUTOSTART)
            yield s
        finally:
            provoked.cache_clear()
            s.remove()


# --- helpers --------------------------------------------------------------------------------
def stored(stack: Stack, kind: str) -> list[dict]:
    return stack.call("monitor", "alerts", kind=kind, limit=1000)


def wait_alert(stack: Stack, kind: str, timeout: float = 30,
               where: Callable[[dict], bool] = lambda a: True) -> dict:
    found = wait_until(lambda: [a for a in stored(stack, kind) if where(a)], timeout=timeout,
                       interval=0.25, what=f"a {kind} alert")
    return found[-1]


def mode(stack: Stack) -> str:
    return stack.call("monitor", "mode")["mode"]


def base_mib(stack: Stack) -> int:
    """The tree's process memory without the hog's."""
    s = wait_until(lambda: stack.call("monitor", "sample"), what="a sample")
    hog = (s["programs"].get("hog") or {}).get("memory_process") or 0
    return (s["memory_bytes"] - hog) // MiB


def hog_to(stack: Stack, mib: int) -> None:
    (stack.var / "hog_mib").write_text(str(max(mib, 0)))
    if "hog" not in stack.pids():
        assert "started" in stack.ctl("start", "bitdaytrader:hog")


def back_to_normal(stack: Stack) -> None:
    (stack.var / "hog_mib").write_text("0")
    wait_until(lambda: mode(stack) == "normal", timeout=30, what="the mode back to normal")


def hog_over(stack: Stack, threshold_mib: int) -> None:
    """The tree 100 MiB over ``threshold_mib`` through the hog."""
    base = base_mib(stack)
    assert base < LOW - 200, f"the stack alone uses {base} MiB: thresholds too low for it"
    hog_to(stack, threshold_mib + 100 - base)


def settled_subscribers(pub: Publisher) -> None:
    """Wait until every subscriber of ``events`` has reached ``pub`` (the count stops
    rising for half a second)."""
    wait_until(lambda: pub.subscribers("events") >= 1, what="a subscriber")
    last, since = pub.subscribers("events"), time.monotonic()
    while time.monotonic() - since < 0.5:
        time.sleep(0.05)
        if (n := pub.subscribers("events")) != last:
            last, since = n, time.monotonic()


# --- making each kind happen at its source ----------------------------------------------------
def provoke_mode(stack: Stack) -> str:
    hog_over(stack, LOW)
    wait_alert(stack, "mode", where=lambda a: a["figures"]["new"] == "low_resource")
    back_to_normal(stack)
    return stack.tree                    # the tree this stack really uses


def provoke_high_memory(stack: Stack) -> str:
    hog_over(stack, HIGH)
    wait_alert(stack, "high_memory")
    back_to_normal(stack)
    return stack.tree                    # the tree this stack really uses


def provoke_critical_stop(stack: Stack) -> str:
    hog_over(stack, CRITICAL)
    wait_alert(stack, "critical_stop")
    wait_until(lambda: "STOPPED" in stack.ctl("status", "bitdaytrader:hog"), what="hog stopped")
    back_to_normal(stack)
    return "hog"


def provoke_high_cpu(stack: Stack) -> str:
    assert "started" in stack.ctl("start", "bitdaytrader:spin")
    try:
        wait_alert(stack, "high_cpu")
    finally:
        stack.ctl("stop", "bitdaytrader:spin")
    return stack.tree                    # the tree this stack really uses


def provoke_crash(stack: Stack) -> str:
    assert "started" in stack.ctl("start", "bitdaytrader:fat")
    os.kill(stack.pids()["fat"], signal.SIGKILL)       # by pid: a program of this stack
    wait_alert(stack, "crash", where=lambda a: a["subject"] == "fat")
    return "fat"


@cache
def provoked(stack: Stack, what: str) -> None:
    """Flows that make two kinds happen, run once per stack."""
    if what == "fat twice":
        # 200 MiB in 256 MiB (over 60 %): restarted; back over at once, within the cooldown:
        # held, critical
        (stack.var / "fat_mib").write_text("200")
        stack.ctl("start", "bitdaytrader:fat")
        try:
            wait_alert(stack, "restart", where=lambda a: a["subject"] == "fat")
            wait_alert(stack, "restart_held", where=lambda a: a["subject"] == "fat")
        finally:
            (stack.var / "fat_mib").write_text("0")
            stack.ctl("stop", "bitdaytrader:fat")
    elif what == "busy metrics port":
        # the monitor restarted while another process holds its port, which is freed later
        assert "stopped" in stack.ctl("stop", "bitdaytrader:monitor")
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # past TIME_WAIT; a
        try:                                                         # listener still blocks
            holder.bind(("127.0.0.1", stack.metrics_port))      # type: ignore[attr-defined]
            holder.listen()
            assert "started" in stack.ctl("start", "bitdaytrader:monitor")
            wait_alert(stack, "monitor", where=lambda a: a["subject"] == "metrics")
            time.sleep(2)
        finally:
            holder.close()
        wait_alert(stack, "metrics_listening")


def provoke_restart(stack: Stack) -> str:
    provoked(stack, "fat twice")
    return "fat"


def provoke_restart_held(stack: Stack) -> str:
    provoked(stack, "fat twice")
    return "fat"


def provoke_restart_failed(stack: Stack) -> str:
    flag = stack.var / "flaky_mib.fail"
    (stack.var / "flaky_mib").write_text("200")
    assert "started" in stack.ctl("start", "bitdaytrader:flaky")
    flag.write_text("")                # its next start fails: supervisord's startProcess too
    try:
        wait_alert(stack, "restart_failed")
    finally:
        flag.unlink()
        (stack.var / "flaky_mib").write_text("0")
        stack.ctl("stop", "bitdaytrader:flaky")
    return "flaky"


def provoke_leak(stack: Stack) -> str:
    assert "started" in stack.ctl("start", "bitdaytrader:leaker")
    try:
        wait_alert(stack, "leak", timeout=40)
    finally:
        stack.ctl("stop", "bitdaytrader:leaker")
    return "leaker"


def provoke_oom_kill(stack: Stack) -> str:
    """The scheduler's job is OOM-killed: the scheduler (its run) and the monitor (the batch
    slice's count) both raise it — and it is one alert."""
    assert mode(stack) == "normal"
    assert stack.bdt("job", "run", "backtest").returncode == 0
    wait_until(lambda: any(r["state"] == "oom_killed" for r in
                           stack.call("scheduler", "history", limit=5)),
               timeout=60, interval=0.5, what="the job OOM-killed")
    alert = wait_alert(stack, "oom_kill", where=lambda a: len(a["sources"]) == 2)
    assert sorted(alert["sources"]) == ["monitor", "scheduler"], alert
    assert [a["subject"] for a in stored(stack, "oom_kill")] == ["batch"]    # one alert
    assert alert["figures"]["job"] == "backtest" and alert["figures"]["oom_kills"] >= 1
    return "batch"


def provoke_supervisor(stack: Stack) -> str:
    sock = stack.var / "run" / "supervisor.sock"
    aside = sock.with_name("supervisor.sock.aside")
    sock.rename(aside)                 # supervisord listens on; nobody finds it
    try:
        wait_alert(stack, "supervisor", where=lambda a: a["severity"] == "critical")
    finally:
        aside.rename(sock)
    wait_alert(stack, "supervisor", where=lambda a: a["severity"] == "info")
    return "supervisord"


def provoke_monitor(stack: Stack) -> str:
    provoked(stack, "busy metrics port")
    return "metrics"


def provoke_metrics_listening(stack: Stack) -> str:
    provoked(stack, "busy metrics port")
    return "metrics"


def bot_raises(stack: Stack, tmp_path, kind: str) -> str:
    """The bot stopped, this test is the bot on its endpoint: a real engine records the alert
    as it does when the condition happens, and the bot service's own code publishes it."""
    if "bot" in stack.pids():
        assert "stopped" in stack.ctl("stop", "bitdaytrader:bot")
    cfg = load_config({"BDT_VAR": str(tmp_path), "BDT_BOT__MODE": "paper"})
    engine = TradingEngine(cfg, TradingDB(tmp_path / "trading.db"), "BTC/USDT", 60_000)
    if kind == "book_mismatch":
        engine._block("book_mismatch", "book and exchange disagree beyond 10.00 USDT",
                      Balance("BTC", "USDT", 0.0, 0.0, 500.0, 500.0, 50_000.0))
    elif kind == "exchange_unreachable":
        engine._block("exchange_unreachable", "the exchange's balances are unknown (timeout)")
    else:
        engine._alert("order_unresolved", "critical", "order b-1 (buy 0.01) is still unknown "
                      "after 130 s", client_id="b-1", status="unknown", age_s=130)
    pub = Publisher("bot", stack.cfg)
    try:
        settled_subscribers(pub)
        bot = types.SimpleNamespace(engine=engine, publisher=pub, name="bot",
                                    publish=pub.publish, log=logging.getLogger("bdt.bot"))
        BotService._publish_alerts(bot)          # type: ignore[arg-type]
        wait_alert(stack, kind)
    finally:
        pub.close()
        engine.state.close()
    return "bot"


PROVOKE: dict[str, Callable[..., str]] = {
    "mode": provoke_mode, "high_memory": provoke_high_memory, "high_cpu": provoke_high_cpu,
    "restart": provoke_restart, "restart_failed": provoke_restart_failed,
    "restart_held": provoke_restart_held, "leak": provoke_leak, "oom_kill": provoke_oom_kill,
    "crash": provoke_crash, "critical_stop": provoke_critical_stop,
    "supervisor": provoke_supervisor, "monitor": provoke_monitor,
    "metrics_listening": provoke_metrics_listening,
    "book_mismatch": lambda s, t: bot_raises(s, t, "book_mismatch"),
    "exchange_unreachable": lambda s, t: bot_raises(s, t, "exchange_unreachable"),
    "order_unresolved": lambda s, t: bot_raises(s, t, "order_unresolved"),
}
BY_TEST = ("book_mismatch", "exchange_unreachable", "order_unresolved")  # take tmp_path


def test_every_declared_kind_has_its_test():
    """A kind declared without a way to make it happen here fails this (and its own test)."""
    assert set(PROVOKE) == set(KINDS)


def scrape(stack: Stack) -> dict[str, float]:
    url = f"http://127.0.0.1:{stack.metrics_port}/metrics"       # type: ignore[attr-defined]
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_kind_reaches_bdt_alerts_the_webhook_and_the_metrics(stack, kind, tmp_path):
    provoke = PROVOKE[kind]
    subject = provoke(stack, tmp_path) if kind in BY_TEST else provoke(stack)
    out = stack.bdt("alerts", "--kind", kind, "--json")
    assert out.returncode == 0, out.stderr
    alerts = json.loads(out.stdout)
    assert any(a["subject"] == subject for a in alerts), alerts
    # from its declared sources only
    assert all(a["kind"] == kind and set(a["sources"]) <= set(KINDS[kind].sources)
               for a in alerts), alerts
    out = stack.bdt("alerts", "--kind", kind)
    assert out.returncode == 0 and kind in out.stdout and subject in out.stdout, out.stdout
    wait_until(lambda: any(a["kind"] == kind for a in stack.webhook.received), timeout=10,
               what=f"the {kind} alert at the webhook")
    sent = next(a for a in stack.webhook.received if a["kind"] == kind)
    assert sent["source"] == "bitdaytrader" and sent["notified"] and sent["message"]
    wait_until(lambda: scrape(stack).get(f'bdt_alerts_total{{kind="{kind}"}}', 0) >= 1,
               timeout=10, what=f"bdt_alerts_total for {kind}")
