"""Talk to supervisord over its private unix socket (XML-RPC), as supervisorctl does."""

from __future__ import annotations

import configparser
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


def stop_process(rpc: Any, name: str, wait: bool = True) -> bool:
    """Stop ``name`` ("group:program") through ``rpc`` (a ``connect()`` proxy); True when it
    was stopped, False when it was not running. Raises OSError (supervisord not reachable) and
    any other xmlrpc Fault (BAD_NAME, FAILED, …)."""
    try:
        rpc.supervisor.stopProcess(name, wait)
    except xmlrpc.client.Fault as exc:
        if "NOT_RUNNING" not in exc.faultString:
            raise
        return False
    return True


CONF = Path(__file__).resolve().parents[2] / "supervisord.conf"


def read_conf(path: Path = CONF) -> dict[str, dict[str, str]]:
    """The programs of ``supervisord.conf``'s group: name → its [program:x] settings, in the
    group's order. Raises ValueError when a program of the group has no section."""
    parser = configparser.RawConfigParser(strict=True)
    parser.read(path)
    names = [n.strip() for n in parser.get(f"group:{GROUP}", "programs").split(",")]
    missing = [n for n in names if not parser.has_section(f"program:{n}")]
    if missing:
        raise ValueError(f"{path}: group {GROUP} names {', '.join(missing)} without a section")
    return {n: dict(parser.items(f"program:{n}")) for n in names}
