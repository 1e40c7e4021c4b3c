"""Talk to supervisord over its private unix socket (XML-RPC), as supervisorctl does."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from shared.config import Config

GROUP = "bitdaytrader"


def socket_path(cfg: Config) -> Path:
    return cfg.run_dir / "supervisor.sock"


def connect(cfg: Config) -> Any:
    """An XML-RPC proxy; calls raise OSError when supervisord is not running."""
    transport = SupervisorTransport(None, None, f"unix://{socket_path(cfg)}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def process_table(cfg: Config) -> list[dict[str, Any]]:
    """supervisord's view of every program in the group."""
    infos = connect(cfg).supervisor.getAllProcessInfo()
    return [p for p in infos if p.get("group") == GROUP]
