"""Once, the real thing: supervisord runs the dashboard in its 500 MiB slice through
``bdt dashboard start`` (after refusing, through the same path, a need it cannot meet),
headless Chromium opens every page in its own tab over the DevTools protocol, a screenshot
of each is kept, the slice's memory with every page open is measured, and ``bdt dashboard
stop`` ends it.

Screenshots go to $TEST_ARTIFACTS_DIR/dashboard if set, else to pytest's temporary directory;
the path and the memory figures are printed."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.sync.client import ClientConnection, connect

from shared.bus.client import wait_for
from shared.resources import cgexec
from tests.helpers import REPO, descendants, wait_until
from tests.stack import Stack
from tests.test_dashboard import build_var, write_snapshot

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; "
                             ".ci/run installs it when it can)")
# no sandbox (root), no GPU, and none of Chromium's own connections to the outside
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run")
MIB = 1 << 20
# url path → (a text the finished page shows, charts it draws)
PAGES = {"": ("today's P&L", 2), "resources": ("Slices now", 2), "jobs": ("Runs (4", 2),
         "backtests": ("Metrics", 5), "models": ("Promotion gate decision", 0)}
PAGE_STATE = """JSON.stringify(document.body === null ? null : {
  text: document.body.innerText,
  running: document.querySelector('[data-testid="stStatusWidget"]') !== null,
  charts: document.querySelectorAll('[data-testid="stVegaLiteChart"]').length,
  drawn: document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, '
                                    + '[data-testid="stVegaLiteChart"] svg.marks').length,
  errors: document.querySelectorAll('[data-testid="stException"]').length})"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_conf(stack: Stack, port: int, need_mib: int | None = None) -> None:
    """The real supervisord.conf with nothing started at boot, and the dashboard on ``port``
    (and with ``need_mib``, a need for memory it cannot meet)."""
    conf = (REPO / "supervisord.conf").read_text().replace("autostart=true", "autostart=false")
    command = "-- python -m services.dashboard\n"
    assert command in conf
    extra = f" --port {port}" + ("" if need_mib is None else f" --need-mib {need_mib}")
    conf = conf.replace(command, command[:-1] + extra + "\n")
    if stack.conf.is_symlink():
        stack.conf.unlink()
    stack.conf.write_text(conf)


class DevTools:
    """Chromium's DevTools protocol over its browser websocket: just what the test needs."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:                            # events of the pages in between are skipped
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open_tab(self, url: str) -> str:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session, width=1400, height=2200,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", session, url=url)
        return session

    def state(self, session: str) -> dict[str, Any] | None:
        result = self.call("Runtime.evaluate", session, expression=PAGE_STATE,
                           returnByValue=True)["result"]
        return json.loads(result["value"]) if "value" in result else None

    def screenshot(self, session: str, path: Path) -> None:
        """The whole page: the viewport grown to the height of Streamlit's scrolled main
        block first."""
        result = self.call("Runtime.evaluate", session, returnByValue=True, expression=(
            "document.querySelector('[data-testid=\"stMain\"]').scrollHeight"))["result"]
        self.call("Emulation.setDeviceMetricsOverride", session, width=1400,
                  height=min(8000, max(2200, int(result.get("value") or 0) + 50)),
                  deviceScaleFactor=1, mobile=False)
        time.sleep(1.0)                                       # charts re-laid out
        path.write_bytes(base64.b64decode(
            self.call("Page.captureScreenshot", session, format="png")["data"]))

    def close(self) -> None:
        with contextlib.suppress(Exception):   # the browser may be gone already
            self.call("Browser.close")


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Chromium with a fresh profile; (its process, its DevTools websocket URL)."""
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    active = profile / "DevToolsActivePort"
    wait_until(lambda: active.is_file() and len(active.read_text().split()) == 2, timeout=30,
               what="Chromium's DevTools port")
    port, path = active.read_text().split()
    return proc, f"ws://127.0.0.1:{port}{path}"


def stop_chromium(proc: subprocess.Popen, tools: DevTools | None) -> None:
    """Browser.close, then SIGKILL by PID whatever of it is left."""
    if tools is not None:
        tools.close()
    children = descendants(proc.pid)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def slice_figures(stack: Stack) -> dict[str, Any]:
    report = cgexec.slice_report(stack.cfg, cgexec.load_table(stack.cfg))
    return {"enforced": report["enforced"],
            **next(r for r in report["slices"] if r["slice"] == "dashboard")}


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon of ``pid`` in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            out[key] = int(value.split()[0]) * 1024
    return out


@pytest.fixture
def artifacts(tmp_path_factory) -> Path:
    root = os.environ.get("TEST_ARTIFACTS_DIR")
    if root:
        path = Path(root) / "dashboard"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("dashboard-screenshots")


def test_chromium_loads_every_page_of_the_running_dashboard_within_its_slice(artifacts,
                                                                            capsys):
    port = free_port()
    stack = Stack()
    chromium: subprocess.Popen | None = None
    tools: DevTools | None = None
    profile = Path(tempfile.mkdtemp(prefix="bdt-chromium-"))
    closing = contextlib.ExitStack()
    try:
        build_var(stack.cfg)
        write_conf(stack, port, need_mib=100_000_000)
        stack.start()
        wait_until(lambda: (stack.var / "run" / "supervisor.sock").exists(), timeout=30,
                   what="supervisord's socket")

        # refused through supervisord, saying how much there is
        refused = stack.bdt("dashboard", "start")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "refusing to start: the dashboard needs 100000000 MiB" in refused.stderr
        assert "MiB available, the tree" in refused.stderr

        write_conf(stack, port)
        stack.ctl("reread")
        stack.ctl("update")                   # the group again, nothing started at boot
        stack.ctl("start", "bitdaytrader:cache")
        wait_for("cache", stack.cfg, timeout_s=15)
        write_snapshot(stack.cfg)

        started = stack.bdt("dashboard", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        match = re.search(rf"pid (\d+)\) on http://127\.0\.0\.1:{port}/", started.stdout)
        assert match, started.stdout
        pid = int(match.group(1))
        assert psutil.Process(pid).cmdline()[1:4] == ["-m", "streamlit", "run"]
        assert [c.laddr[0] for c in psutil.Process(pid).net_connections("tcp")
                if c.status == psutil.CONN_LISTEN] == ["127.0.0.1"]
        before = slice_figures(stack)
        if before["enforced"]:
            assert pid in before["pids"]                      # in its own slice

        chromium, url = start_chromium(profile)
        tools = DevTools(closing.enter_context(connect(url, max_size=None, open_timeout=10)))
        sessions = {}
        for path, (marker, charts) in PAGES.items():
            session = sessions[path] = tools.open_tab(f"http://127.0.0.1:{port}/{path}")

            def done(session: str = session, marker: str = marker, charts: int = charts):
                state = tools.state(session)
                return state and marker in state["text"] and not state["running"] \
                    and state["charts"] == charts and state["drawn"] >= charts and state

            state = wait_until(done, timeout=60, interval=0.5, what=f"page /{path} drawn")
            assert state["errors"] == 0 and "Traceback" not in state["text"]
            tools.screenshot(session, artifacts / f"{path or 'live'}.png")

        time.sleep(2.0)                  # every tab open: the figures with five live sessions
        figures = slice_figures(stack)
        status = proc_status(pid)
        cap = figures["cap_bytes"]
        report = (f"dashboard with every page open (5 tabs): process RssAnon "
                  f"{status['RssAnon'] / MIB:.0f} MiB, RSS {status['VmRSS'] / MIB:.0f} MiB, "
                  f"peak RSS {status['VmHWM'] / MIB:.0f} MiB")
        if figures["enforced"]:
            report += (f"; slice process memory {figures['memory_anon'] / MIB:.0f} MiB, "
                       f"slice peak (with page cache) {figures['memory_peak'] / MIB:.0f} MiB, "
                       f"cap {cap / MIB:.0f} MiB, OOM kills {figures['oom_kills']}")
        with capsys.disabled():
            print(f"\n{report}\nscreenshots: {artifacts}")
        assert status["VmHWM"] < 0.8 * cap
        if figures["enforced"]:
            assert figures["memory_peak"] < cap and figures["oom_kills"] == 0
        for path in PAGES:
            assert (artifacts / f"{path or 'live'}.png").stat().st_size > 20_000

        stopped = stack.bdt("dashboard", "stop")
        assert stopped.returncode == 0 and "dashboard stopped" in stopped.stdout
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert "dashboard not running" in stack.bdt("dashboard", "stop").stdout
    finally:
        if chromium is not None:
            stop_chromium(chromium, tools)
        closing.close()
        shutil.rmtree(profile, ignore_errors=True)
        stack.remove()
