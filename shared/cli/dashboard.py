"""``bdt dashboard start|stop``: the on-demand dashboard through supervisord (XML-RPC), as
``supervisorctl start|stop bitdaytrader:dashboard`` does — plus, on start, waiting until it
listens on 127.0.0.1 and saying why when it refused (its memory check, docs/dashboard.md)."""

from __future__ import annotations

import argparse
import sys
import time
import xmlrpc.client
from typing import Any

import psutil

from shared.cli.verbs import opt, verb
from shared.config import Config
from shared.resources import supervisor

PROGRAM = f"{supervisor.GROUP}:dashboard"
WAIT = opt("--wait", type=float, default=30.0, metavar="S",
           help="seconds to wait for it to listen (30)")


def listening(pid: int) -> tuple[str, int] | None:
    """The address the dashboard's process (supervisord's pid: the launcher execs Streamlit)
    listens on, once it does."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return None
    return next((c.laddr[:2] for c in conns if c.status == psutil.CONN_LISTEN), None)


def why_it_stopped(rpc: Any) -> str:
    """The dashboard's last error line from its log (its refusal says how much memory there
    is), or the last line."""
    try:
        text = rpc.supervisor.tailProcessStdoutLog(PROGRAM, 0, 4000)[0]
    except (OSError, xmlrpc.client.Fault):
        return "see var/log/dashboard.log"
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if " ERROR " in line]
    return (errors or lines or ["its log is empty"])[-1]


def state(rpc: Any) -> dict[str, Any]:
    return rpc.supervisor.getProcessInfo(PROGRAM)


@verb("dashboard start", "start the on-demand dashboard on 127.0.0.1 (it refuses without "
      "600 MiB free on the machine and in the tree)", WAIT)
def cmd_start(cfg: Config, args: argparse.Namespace) -> int:
    rpc = supervisor.connect(cfg)
    try:
        rpc.supervisor.startProcess(PROGRAM, True)
    except OSError as exc:
        print(f"bdt: supervisord not reachable at {supervisor.socket_path(cfg)}: {exc}",
              file=sys.stderr)
        return 1
    except xmlrpc.client.Fault as exc:
        if "ALREADY_STARTED" not in exc.faultString:
            print(f"bdt: the dashboard did not start ({exc.faultString}): {why_it_stopped(rpc)}",
                  file=sys.stderr)
            return 1
    deadline = time.monotonic() + args.wait
    while True:
        info = state(rpc)
        if info["statename"] != "RUNNING":
            print(f"bdt: the dashboard stopped ({info['statename']}): {why_it_stopped(rpc)}",
                  file=sys.stderr)
            return 1
        address = listening(info["pid"])
        if address:
            break
        if time.monotonic() > deadline:
            print(f"bdt: the dashboard (pid {info['pid']}) does not listen after {args.wait:g}"
                  " s: see var/log/dashboard.log", file=sys.stderr)
            return 1
        time.sleep(0.2)
    host, port = address
    print(f"dashboard running (pid {info['pid']}) on http://{host}:{port}/ — from your "
          f"machine: ssh -L {port}:127.0.0.1:{port} user@this-host, then open "
          f"http://127.0.0.1:{port}/")
    return 0


@verb("dashboard stop", "stop the dashboard (it frees its memory; start it again when needed)")
def cmd_stop(cfg: Config, args: argparse.Namespace) -> int:
    try:
        stopped = supervisor.stop_process(supervisor.connect(cfg), PROGRAM)
    except OSError as exc:
        print(f"bdt: supervisord not reachable at {supervisor.socket_path(cfg)}: {exc}",
              file=sys.stderr)
        return 1
    except xmlrpc.client.Fault as exc:
        print(f"bdt: stopping the dashboard failed: {exc.faultString}", file=sys.stderr)
        return 1
    print("dashboard stopped" if stopped else "dashboard not running")
    return 0
