"""dashboard: the on-demand Streamlit app (docs/dashboard.md).

supervisord runs this (``autostart=false``: ``bdt dashboard start`` or ``supervisorctl start
bitdaytrader:dashboard``) inside the ``dashboard`` slice. It first checks that the machine and
the project's tree both have 600 MiB available and refuses otherwise, with a log line giving
the figures (exit 1); then it replaces itself with Streamlit's server (same pid, so supervisord
stops it directly), bound to 127.0.0.1 only, with the light settings of seed 000 §6.2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from services.dashboard.headroom import MIB, NEED_BYTES, Headroom, read_headroom
from shared.config import Config, ConfigError, load_config
from shared.logs import setup_logging

log = logging.getLogger("bdt.dashboard")

APP = Path(__file__).resolve().parent / "app.py"
ADDRESS = "127.0.0.1"
PORT = 8501


def streamlit_flags(port: int) -> list[str]:
    """Streamlit's settings, all on the command line (they override any config.toml):
    loopback only, headless, no file watcher, no usage statistics, small upload and message
    limits, caches bounded in total, nothing served but the app."""
    settings = {
        "server.address": ADDRESS,
        "server.port": port,
        "server.headless": "true",
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "server.allowRunOnSave": "false",
        "server.maxUploadSize": 1,              # MB; the app takes no uploads
        "server.maxMessageSize": 10,            # MB per message to the browser
        "server.maxCacheDataSize": "64mb",      # every st.cache_data entry together
        "server.disconnectedSessionTTL": 60,    # a closed tab's session is dropped after 60 s
        "server.enableStaticServing": "false",
        "server.enableAgentApi": "false",
        "server.showEmailPrompt": "false",
        "browser.gatherUsageStats": "false",
        "browser.serverAddress": ADDRESS,
        "browser.serverPort": port,
        "runner.magicEnabled": "false",
        "client.toolbarMode": "viewer",
        "global.developmentMode": "false",
    }
    return [f"--{key}={value}" for key, value in settings.items()]


def streamlit_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), *streamlit_flags(port)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.dashboard",
                                     description="the on-demand dashboard (docs/dashboard.md)")
    parser.add_argument("--port", type=int, default=PORT, help="port on 127.0.0.1 (8501)")
    parser.add_argument("--need-mib", type=int, default=NEED_BYTES // MIB,
                        help="memory the machine and the tree must have available (600)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None,
         read: Callable[[Config], Headroom] = read_headroom) -> int:
    """Check the headroom, then exec Streamlit; returns only when refusing (1) or on a bad
    configuration (2). ``read`` gives the headroom reading (a test injects one)."""
    args = parse_args(argv)
    try:
        cfg = load_config()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    reading = read(cfg)
    refusal = reading.refusal(args.need_mib * MIB)
    if refusal:
        log.error("%s", refusal)
        return 1
    log.info("%s; starting Streamlit on http://%s:%d (pid %d)", reading.describe(), ADDRESS,
             args.port, os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    argv_ = streamlit_argv(args.port)
    os.execv(argv_[0], argv_)
    return 0                                    # not reached: execv replaced this process


if __name__ == "__main__":
    setup_logging("dashboard")
    sys.exit(main())
