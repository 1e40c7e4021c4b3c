"""The real supervisord with the real supervisord.conf (see tests/stack.py)."""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest

from shared.bus.client import BusClient, wait_for
from shared.bus.endpoints import NOT_SERVING
from shared.resources.allocation import load_allocation
from shared.resources.cgroup import slice_of_pid
from tests.cgroup_helpers import writable_backend
from tests.helpers import REPO, wait_until
from tests.stack import AUTOSTART, ON_DEMAND, Stack, small_stack


@pytest.fixture(scope="module")
def stack():
    # the feed waits for no subscriber and has nothing to replay quickly: this module is
    # about the process table and the slices, not market data
    yield from small_stack()


def test_every_autostart_program_runs_and_answers(stack):
    pids = stack.pids()
    assert set(AUTOSTART) <= set(pids)
    for name in AUTOSTART:
        with BusClient(name, stack.cfg, timeout_ms=1000) as client:
            reply = client.call("status")
        assert reply["pid"] == pids[name]
        assert reply["service"] == name
    status = stack.ctl("status")
    for name in ON_DEMAND:
        assert f"bitdaytrader:{name}" in status and "STOPPED" in status


def test_stop_and_start_one_program_while_the_others_keep_running(stack):
    before = stack.pids()
    assert "stopped" in stack.ctl("stop", "bitdaytrader:cache")
    after_stop = stack.pids()
    assert "cache" not in after_stop
    assert not (stack.var / "run" / "cache.sock").exists()
    assert "started" in stack.ctl("start", "bitdaytrader:cache")
    after = stack.pids()
    for name in AUTOSTART:
        if name != "cache":
            assert after[name] == before[name], f"{name} was restarted"
    assert after["cache"] != before["cache"]
    wait_for("cache", stack.cfg)
    restarted = stack.ctl("restart", "bitdaytrader:bot")
    assert "stopped" in restarted and "started" in restarted
    wait_for("bot", stack.cfg)
    assert stack.pids()["bot"] != before["bot"]


def test_every_program_runs_in_its_slice_with_the_tables_limits(stack):
    backend, reason = writable_backend(stack.tree)
    if backend is None:
        pytest.skip(f"cgroups not writable here: {reason}")
    table = load_allocation()
    for name, pid in stack.pids().items():
        expected = table.slice_for_program(name)
        assert slice_of_pid(pid, stack.tree) == expected.name, name
        stats = backend.stats(expected.name)
        assert pid in stats.pids
        assert stats.memory_max == expected.memory_max
        assert stats.cpu_weight == expected.cpu_weight
    parent = backend.parent_stats()
    assert parent.memory_max == table.parent.memory_max
    assert parent.cpu_quota == table.parent.cpu_quota


def test_bdt_status_json_reports_every_program_from_supervisord_and_cgroups(stack):
    out = stack.bdt("status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    by_name = {p["program"]: p for p in status["programs"]}
    assert set(AUTOSTART) | set(ON_DEMAND) == set(by_name)
    for name in AUTOSTART:
        entry = by_name[name]
        assert entry["state"] == "RUNNING" and entry["service"]["pid"] == entry["pid"]
        if status["cgroups"]["enforced"]:
            assert 0 < entry["memory_bytes"] < entry["memory_cap_bytes"]
            assert entry["oom_kills"] == 0
    text = stack.bdt("status")
    assert "cgroup limits:" in text.stdout and "bot" in text.stdout
    show = stack.bdt("cgroups", "show", "--json")
    assert show.returncode == 0, show.stderr
    assert {r["slice"] for r in json.loads(show.stdout)["slices"]} >= {"bot", "batch"}


def test_status_shows_process_memory_and_page_cache_apart(stack, tmp_path):
    """Issue 12 case 5: a STOPPED batch program showed 138M/1536M — all page cache left by the
    training run. The cap is compared with process memory; page cache is its own column."""
    backend, reason = writable_backend(stack.tree)
    if backend is None:
        pytest.skip(f"cgroups not writable here: {reason}")
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.write(os.urandom(64 << 20))
        f.flush()
        os.fsync(f.fileno())                 # clean pages: DONTNEED can drop them all
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)   # the read charges batch
    out = stack.bdt("cgexec", "batch", "--", "dd", f"if={big}", "of=/dev/null", "bs=1M")
    assert out.returncode == 0
    status = json.loads(stack.bdt("status", "--json").stdout)
    backtest = next(p for p in status["programs"] if p["program"] == "backtest")
    assert backtest["state"] != "RUNNING"
    assert backtest["memory_page_cache_bytes"] > 32 << 20
    assert backtest["memory_process_bytes"] < 8 << 20
    line = next(li for li in stack.bdt("status").stdout.splitlines() if li.startswith("backtest"))
    cells = line.split()
    assert cells[cells.index("batch") + 1] in ("0M/1536M", "1M/1536M", "2M/1536M")


def test_bdt_status_is_one_screen_from_the_cache_snapshot(stack):
    """Issue 16: the monitor, the bot and the scheduler write their latest figures into the
    cache; `bdt status` reads them in one round trip: mode, programs, jobs, position."""
    from shared.bus.cache_client import CacheClient

    def snapshot_ready() -> bool:
        with_client = CacheClient(stack.cfg)
        try:
            return all(with_client.get(k) is not None for k in
                       ("monitor:sample", "bot:position", "scheduler:jobs"))
        finally:
            with_client.close()
    wait_until(snapshot_ready, timeout=30, interval=0.5, what="the cache snapshot")
    text = stack.bdt("status").stdout
    assert text.startswith("resource mode normal")
    assert "job backtest" in text and "job walkforward" in text
    import re

    assert re.search(r"^position [+-]?[\d.]+ BTC/USDT @ [\d,.]+ +equity [\d,]+\.\d\d", text,
                     re.M), text
    assert any(line.startswith("bot ") and "RUNNING" in line for line in text.splitlines())


def test_status_names_on_demand_programs_idle_and_the_real_tree(stack):
    """Issue 24 case 5: `bdt status` showed the on-demand programs STOPPED forever (so "all
    RUNNING" never appeared) and its header read `bitdaytrader total` for another tree;
    `bdt cgroups show` labelled the parent with the default tree name too."""
    text = stack.bdt("status").stdout
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:] if line.strip()}
    for name in ON_DEMAND:
        assert rows[name][1] == "idle", text
    for name in AUTOSTART:
        assert rows[name][1] == "RUNNING", text
    assert f" tree {stack.tree} " in text.splitlines()[0] and "bitdaytrader total" not in text
    show = json.loads(stack.bdt("cgroups", "show", "--json").stdout)
    assert show["slices"][0]["slice"] == stack.tree
    status = json.loads(stack.bdt("status", "--json").stdout)
    assert {p["program"] for p in status["programs"] if p["idle"]} == set(ON_DEMAND)


def test_status_keeps_one_layout_with_the_cache_down(stack):
    """With the cache down its layout changed (another header, other columns, no jobs)."""
    def header_and_columns(text: str) -> tuple[str, str]:
        lines = text.splitlines()
        return lines[0].split("   ")[0].split("  (")[0][:13], next(
            li for li in lines if li.startswith("program"))

    wait_until(lambda: stack.bdt("status").stdout.startswith("resource mode normal"),
               timeout=30, interval=0.5, what="the monitor's snapshot")
    up = stack.bdt("status").stdout
    stack.ctl("stop", "bitdaytrader:cache")
    try:
        down = stack.bdt("status")
        assert down.returncode == 0, down.stderr
        assert header_and_columns(down.stdout) == header_and_columns(up)
        assert down.stdout.startswith("resource mode unknown  (no monitor snapshot in the "
                                      "cache: cache or monitor down)"), down.stdout
        assert "jobs: unknown" in down.stdout and f" tree {stack.tree} " in down.stdout
        cache_row = next(li for li in down.stdout.splitlines() if li.startswith("cache "))
        assert "STOPPED" in cache_row
    finally:
        stack.ctl("start", "bitdaytrader:cache")
        wait_for("cache", stack.cfg, timeout_s=30)


def test_batch_programs_run_and_say_what_they_did(stack):
    """backtest runs its default spec through supervisord (here: bars stored, no model
    promoted — a clear log line and exit 1); so does walkforward (far too little data)."""
    stack.ctl("start", "bitdaytrader:backtest")
    wait_until(lambda: "EXITED" in stack.ctl("status", "bitdaytrader:backtest"),
               what="backtest to exit")
    log = (stack.var / "log" / "backtest.log").read_text()
    assert "not implemented" not in log and "Traceback" not in log
    assert "backtest not run: " in log or "report " in log
    stack.ctl("start", "bitdaytrader:walkforward")
    wait_until(lambda: "EXITED" in stack.ctl("status", "bitdaytrader:walkforward"),
               what="walkforward to exit")
    log = (stack.var / "log" / "walkforward.log").read_text()
    assert "walk-forward not run: " in log and "Traceback" not in log


def test_shutdown_leaves_no_process_socket_or_file(stack):
    pids = set(stack.pids().values()) | stack.seen_pids
    children = psutil.Process(stack.proc.pid).children(recursive=True)
    stack.shutdown()
    assert stack.proc.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert sorted(os.listdir(stack.var / "run")) == []


def test_supervisord_started_without_the_venv_on_path_finds_the_projects_commands():
    """Issue 12 case 10: `.venv/bin/supervisord -c supervisord.conf` from the checkout, with a
    PATH that does not hold the venv, made every program FATAL ("can't find command 'bdt'").
    The conf puts its own .venv/bin first (here a symlink beside the test's conf stands for the
    checkout's venv)."""
    s = Stack(BDT_MARKET__SAMPLE_BARS="200", BDT_BOT__WAIT_SUBSCRIBERS="0")
    try:
        (s.dir / ".venv").symlink_to(REPO / ".venv")
        s.env["PATH"] = "/usr/bin:/bin"
        s.start()
        s.env["PATH"] = f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin"   # for supervisorctl here
        s.wait_running(["cache", "history"], timeout=60)
        assert "FATAL" not in s.ctl("status")
    finally:
        s.remove()



def test_running_means_serving_and_bdt_waits_for_a_starting_service():
    """Issue 24 case 5: supervisorctl showed every program RUNNING up to ~35 s before it
    listened, and `bdt job run …` right after start answered "service unavailable: nothing
    listening". Now a program is RUNNING only once it answers, and a verb aimed at a program
    still STARTING waits for it, saying so."""
    s = Stack(BDT_MARKET__SAMPLE_BARS="200", BDT_BOT__WAIT_SUBSCRIBERS="0")
    try:
        s.start()
        wait_until(lambda: "STARTING" in s.ctl("status", "bitdaytrader:scheduler"), timeout=30,
                   interval=0.05, what="the scheduler STARTING")
        jobs = s.bdt("job", "list")            # answered at once, or after "… is starting"
        assert jobs.returncode == 0, jobs.stderr
        assert "backtest" in jobs.stdout and "nothing listening" not in jobs.stderr
        answered: set[str] = set()
        deadline = time.monotonic() + 60
        while answered != set(AUTOSTART) and time.monotonic() < deadline:
            for name, _pid in s.pids().items():
                if name in answered or name in NOT_SERVING:
                    answered.add(name)
                    continue
                with BusClient(name, s.cfg, timeout_ms=1000, retries=0) as client:
                    client.call("ping")          # RUNNING: it answers at once
                answered.add(name)
            time.sleep(0.1)
        assert answered == set(AUTOSTART)
    finally:
        s.remove()


def test_a_verb_aimed_at_a_starting_service_waits_and_says_so(monkeypatch, capsys, var_dir):
    """While supervisord says STARTING, "nothing listening" is waited out (bounded), once
    said on stderr; a program that is STOPPED fails at once."""
    from shared.bus.client import ServiceUnavailable
    from shared.cli import verbs
    from shared.config import load_config

    cfg = load_config({"BDT_VAR": str(var_dir)})
    answers = iter([None, None, {"jobs": []}])

    class Starting:
        def __init__(self, service, cfg):
            self.service = service

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def call(self, op, **args):
            reply = next(answers)
            if reply is None:
                raise ServiceUnavailable(self.service, op, "service unavailable: nothing "
                                                           "listening")
            return reply

    monkeypatch.setattr(verbs, "BusClient", Starting)
    monkeypatch.setattr(verbs, "_program_state", lambda cfg, program: "STARTING")
    monkeypatch.setattr(time, "sleep", lambda s: None)
    assert verbs.call_service(cfg, "scheduler", "jobs") == {"jobs": []}
    err = capsys.readouterr().err
    assert err.count("bdt: scheduler is starting (supervisord: STARTING); waiting up to 30 s") \
        == 1, err
    answers = iter([None])
    monkeypatch.setattr(verbs, "_program_state", lambda cfg, program: "STOPPED")
    with pytest.raises(ServiceUnavailable):
        verbs.call_service(cfg, "scheduler", "jobs")
