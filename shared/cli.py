"""``bdt``: the operator's command line. Each verb is one small function over shared code."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import msgpack

from shared import supervisor_rpc
from shared.bus import SERVICES, BusClient, BusError
from shared.config import Config, ConfigError, load_config


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / (1 << 20):.0f}M"


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --- status ------------------------------------------------------------------------------
def gather_status(cfg: Config) -> dict[str, Any]:
    """Every program: supervisord's state and pid, and the service's own status if it answers."""
    try:
        table = supervisor_rpc.process_table(cfg)
        supervisor_error = None
    except OSError as exc:
        table, supervisor_error = [], f"supervisord not reachable at " \
            f"{supervisor_rpc.socket_path(cfg)}: {exc}"
    programs = []
    for info in table:
        name = info["name"]
        entry: dict[str, Any] = {
            "program": name,
            "state": info["statename"],
            "pid": info["pid"] or None,
            "uptime_s": (info["now"] - info["start"]) if info["statename"] == "RUNNING" else 0,
            "exit_status": info["exitstatus"],
            "spawn_error": info.get("spawnerr") or None,
        }
        if info["statename"] == "RUNNING" and name in SERVICES:
            try:
                with BusClient(name, cfg, timeout_ms=500, retries=0) as client:
                    entry["service"] = client.call("status")
            except BusError as exc:
                entry["service_error"] = str(exc)
        programs.append(entry)
    return {"supervisord": supervisor_error or "running", "programs": programs}


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    status = gather_status(cfg)
    if args.json:
        _print_json(status)
        return 0 if status["supervisord"] == "running" else 1
    if status["supervisord"] != "running":
        print(status["supervisord"])
        return 1
    rows = []
    for p in status["programs"]:
        svc = p.get("service", {})
        note = p.get("service_error") or svc.get("not_yet") or p.get("spawn_error") or ""
        rows.append([p["program"], p["state"], p["pid"] or "-", _uptime(p["uptime_s"]),
                     _mb(svc.get("rss_bytes")), note])
    _table(rows, ["program", "state", "pid", "uptime", "rss", "note"])
    return 0


# --- ping / cache / config ---------------------------------------------------------------
def cmd_ping(cfg: Config, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with BusClient(args.service, cfg) as client:
        reply = client.call("ping")
    print(f"{args.service}: pong from pid {reply['pid']} in "
          f"{(time.perf_counter() - started) * 1000:.2f} ms")
    return 0


def _parse_value(text: str) -> Any:
    """CLI values: JSON when they parse as JSON (numbers, lists, maps), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_cache(cfg: Config, args: argparse.Namespace) -> int:
    with BusClient("cache", cfg) as bus:
        if args.cache_cmd == "stats":
            stats = bus.call("stats")
            if args.json:
                _print_json(stats)
            else:
                for key, value in stats.items():
                    print(f"{key:12} {value}")
        elif args.cache_cmd == "get":
            blob = bus.call("get", key=args.key)
            if blob is None:
                print(f"(no key {args.key!r})", file=sys.stderr)
                return 1
            value = msgpack.unpackb(blob, raw=False)
            print(value if isinstance(value, str) else json.dumps(value, default=repr))
        elif args.cache_cmd == "set":
            packed = msgpack.packb(_parse_value(args.value), use_bin_type=True)
            bus.call("set", key=args.key, value=packed, ttl=args.ttl)
            print("OK")
        elif args.cache_cmd == "del":
            print(bus.call("delete", keys=args.keys))
    return 0


def cmd_config_show(cfg: Config, args: argparse.Namespace) -> int:
    if args.json:
        _print_json({"sources": cfg.sources, "config": cfg.as_dict()})
        return 0
    print("# sources: " + ", ".join(cfg.sources))
    for section, values in cfg.as_dict().items():
        print(f"\n[{section}]")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value)}")
    return 0


# --- parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bdt", description="bitdaytrader operator commands")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("status", help="every program: state, pid, uptime, service status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("ping", help="round trip to one service")
    p.add_argument("service", choices=SERVICES)
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser("cache", help="the cache service")
    csub = p.add_subparsers(dest="cache_cmd", required=True)
    c = csub.add_parser("stats")
    c.add_argument("--json", action="store_true")
    c = csub.add_parser("get")
    c.add_argument("key")
    c = csub.add_parser("set")
    c.add_argument("key")
    c.add_argument("value", help="JSON, or a plain string")
    c.add_argument("--ttl", type=float, default=None, help="seconds")
    c = csub.add_parser("del")
    c.add_argument("keys", nargs="+")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("config", help="configuration")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    c = csub.add_parser("show", help="the merged configuration and where it came from")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config()
        return args.func(cfg, args)
    except ConfigError as exc:
        print(f"bdt: configuration error: {exc}", file=sys.stderr)
        return 2
    except BusError as exc:
        print(f"bdt: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
