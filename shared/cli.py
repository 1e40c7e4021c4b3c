"""``bdt``: the operator's command line. Each verb is one small function over shared code."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

import msgpack

from shared import slices, supervisor_rpc
from shared.allocation import AllocationError
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
    cgroups = _cgroup_figures(cfg, programs)
    return {"supervisord": supervisor_error or "running", "programs": programs, **cgroups}


def _cgroup_figures(cfg: Config, programs: list[dict[str, Any]]) -> dict[str, Any]:
    """Memory used / cap, peak and OOM kills per program, read from its slice (not from ps)."""
    try:
        table = slices.load_table(cfg)
    except AllocationError as exc:
        return {"cgroups": {"enforced": False, "reason": str(exc)}}
    report = slices.slice_report(cfg, table)
    by_slice = {row["slice"]: row for row in report["slices"]}
    for entry in programs:
        try:
            row = by_slice[table.slice_for_program(entry["program"]).name]
        except AllocationError:
            continue
        entry["slice"] = row["slice"]
        entry["memory_bytes"] = row["memory_current"]
        entry["memory_peak_bytes"] = row["memory_peak"]
        entry["memory_cap_bytes"] = row["cap_bytes"]
        entry["oom_kills"] = row["oom_kills"]
        entry["cpu_seconds"] = row["cpu_usage_seconds"]
    parent = report["slices"][0]
    return {"cgroups": {"enforced": report["enforced"], "mode": report["mode"],
                        "reason": report["reason"], "total_bytes": parent["memory_current"],
                        "total_cap_bytes": parent["cap_bytes"]}}


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    status = gather_status(cfg)
    if args.json:
        _print_json(status)
        return 0 if status["supervisord"] == "running" else 1
    if status["supervisord"] != "running":
        print(status["supervisord"])
        return 1
    cg = status["cgroups"]
    if cg["enforced"]:
        print(f"cgroup limits: enforced ({cg['mode']}); bitdaytrader total "
              f"{_mb(cg['total_bytes'])} / {_mb(cg['total_cap_bytes'])}")
    else:
        print(f"cgroup limits: NOT ENFORCED ({cg['reason']})")
    rows = []
    for p in status["programs"]:
        svc = p.get("service", {})
        note = p.get("service_error") or svc.get("not_yet") or p.get("spawn_error") or ""
        memory = f"{_mb(p.get('memory_bytes'))}/{_mb(p.get('memory_cap_bytes'))}"
        oom = p.get("oom_kills")
        rows.append([p["program"], p["state"], p["pid"] or "-", _uptime(p["uptime_s"]),
                     p.get("slice", "-"), memory, "-" if oom is None else oom, note])
    _table(rows, ["program", "state", "pid", "uptime", "slice", "mem/cap", "oom", "note"])
    print("(slice memory is shared by the programs of one slice)")
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


# --- bot -------------------------------------------------------------------------------
def _ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def cmd_bot(cfg: Config, args: argparse.Namespace) -> int:
    with BusClient("bot", cfg) as bot:
        if args.bot_cmd != "status":
            reply = bot.call(args.bot_cmd)
            print(f"{args.bot_cmd}: done" + (" (already flat)" if reply.get("flattened") is False
                                              else ""))
        s = bot.call("status")
    if getattr(args, "json", False):
        _print_json(s)
        return 0
    if s.get("error") or s.get("state_error"):
        print(f"NOT TRADING: {s.get('error') or s.get('state_error')}")
    risk = s.get("risk", {})
    bar, pred, pos = s.get("last_bar") or {}, s.get("last_prediction") or {}, s.get("position", {})
    print(f"mode {s['mode']}  feed {s['feed']} {s['symbol']}  resource mode "
          f"{risk.get('mode', '-')}  {'PAUSED' if risk.get('paused') else 'active'}"
          + (f"  KILLED: {risk.get('kill_reason')}" if risk.get("killed") else ""))
    print(f"last bar   {_ts(bar.get('ts'))}  close {bar.get('close', '-')}"
          f"  ({s['bars_published']} bars, {s['decisions']} decisions)")
    if pred:
        print(f"prediction er {pred['expected_return']:+.5f}  p_up {pred['p_up']:.3f}  "
              f"vol {pred['volatility']:.5f}  model {pred['model_version']}")
    if pos:
        print(f"position   {pos['qty']:+.5f} @ {pos['avg_price']:.2f}  realized "
              f"{pos['realized_pnl']:+.2f}")
        print(f"equity     {s['equity']:.2f}  cash {s['cash']:.2f}  today {s['today_pnl']:+.2f}")
    pred, lat = s.get("bar_to_prediction", {}), s.get("bar_to_decision", {})
    rec = s.get("decision_to_record", {})
    if lat.get("n"):
        print(f"bar→prediction p50 {pred.get('p50_us')} µs  p99 {pred.get('p99_us')} µs;  "
              f"bar→decision p50 {lat['p50_us']} µs  p99 {lat['p99_us']} µs;  "
              f"then execution + record p50 {rec.get('p50_us')} µs  p99 {rec.get('p99_us')} µs")
    return 0


def cmd_trades(cfg: Config, args: argparse.Namespace) -> int:
    with BusClient("bot", cfg) as bot:
        fills = bot.call("trades", since=_when(args.since) or 0, limit=args.limit)
    if args.json:
        _print_json(fills)
        return 0
    rows = [[_ts(f["ts"]), f["side"], f"{f['qty']:.5f}", f"{f['price']:.2f}", f"{f['fee']:.4f}",
             f"{f['realized_pnl']:+.2f}", f["reason"][:60]] for f in fills]
    _table(rows, ["time", "side", "qty", "price", "fee", "realized", "reason"])
    print(f"{len(fills)} fill(s)")
    return 0


def cmd_equity(cfg: Config, args: argparse.Namespace) -> int:
    with BusClient("bot", cfg) as bot:
        curve = bot.call("equity", since=_when(args.since) or 0)
    if args.json:
        _print_json(curve)
        return 0
    step = max(1, len(curve) // 20)
    rows = [[_ts(c["ts"]), f"{c['equity']:.2f}", f"{c['cash']:.2f}", f"{c['position_value']:.2f}"]
            for c in curve[::step]]
    _table(rows, ["time", "equity", "cash", "position"])
    if curve:
        first, last = curve[0]["equity"], curve[-1]["equity"]
        print(f"{len(curve)} points; first {first:.2f}, last {last:.2f}")
    return 0


# --- models ------------------------------------------------------------------------------
def _when(text: str | None) -> int | None:
    """--from/--to: epoch ms, or an ISO date/time (UTC)."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{text!r}: expected epoch ms or an ISO date such as 2026-11-01") \
            from None
    return int(when.replace(tzinfo=when.tzinfo or dt.UTC).timestamp() * 1000)


def cmd_train(cfg: Config, args: argparse.Namespace) -> int:
    from shared.train_job import TrainingError, train

    try:
        result = train(cfg, _when(args.start), _when(args.end), if_missing=args.if_missing)
    except TrainingError as exc:
        print(f"bdt train: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(result)
    elif not result["trained"]:
        print(f"model {result['version']} already promoted; nothing to do")
    else:
        print(f"trained and promoted {result['version']} on {result['source']}")
        for key, value in result["metrics"].items():
            print(f"  {key}: {value}")
    return 0


# --- cgroups -----------------------------------------------------------------------------
def cmd_cgexec(cfg: Config, args: argparse.Namespace) -> int:
    from shared.logs import setup_logging

    setup_logging(f"cgexec[{args.slice}]", cfg.get("log.level"))
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    slices.cgexec(cfg, args.slice, argv)  # never returns


def _print_slices(report: dict[str, Any]) -> None:
    state = f"enforced ({report['mode']})" if report["enforced"] else \
        f"NOT ENFORCED ({report['reason']})"
    print(f"cgroup limits: {state}")
    rows = []
    for r in report["slices"]:
        quota = r["cpu_quota"] if r["cpu_quota"] is not None else r["table_cpu_quota"]
        rows.append([r["slice"], _mb(r["memory_current"]), _mb(r["memory_peak"]),
                     _mb(r["memory_max"] if r["memory_max"] is not None else r["cap_bytes"]),
                     "-" if r["oom_kills"] is None else r["oom_kills"],
                     "-" if r["cpu_usage_seconds"] is None else f"{r['cpu_usage_seconds']:.1f}s",
                     "-" if quota is None else f"{quota:g}",
                     "-" if r["cpu_throttled"] is None else r["cpu_throttled"],
                     "idle" if r["cpu_idle"] else r["cpu_weight"] or r["table_cpu_weight"],
                     len(r["pids"]),
                     ",".join(r["programs"])])
    _table(rows, ["slice", "usage", "peak", "cap", "oom", "cpu", "quota", "throttled", "weight",
                  "procs", "programs"])


def cmd_cgroups(cfg: Config, args: argparse.Namespace) -> int:
    table = slices.load_table(cfg)
    if args.cg_cmd == "apply":
        backend = slices.apply_all(cfg, table)
        report = slices.slice_report(cfg, table, backend)
    elif args.cg_cmd == "clean":
        backend = slices.open_tree(cfg, from_supervisor=True)
        busy = [n for n in table.slices if not backend.remove(n)]
        if not busy:
            backend.remove_tree()
        print("removed the empty slices" + (f"; still in use: {', '.join(busy)}" if busy else ""))
        return 0
    else:
        report = slices.slice_report(cfg, table)
    if getattr(args, "json", False):
        _print_json(report)
    else:
        _print_slices(report)
    return 0


def cmd_doctor(cfg: Config, args: argparse.Namespace) -> int:
    """Can this machine run the stack as designed? Each line: ok / WARN / FAIL and why."""
    problems = 0
    print(f"ok    config: {', '.join(cfg.sources)}")
    try:
        table = slices.load_table(cfg)
        print(f"ok    allocation table: {len(table.slices)} slices, parent cap "
              f"{_mb(table.parent.memory_max)}")
    except AllocationError as exc:
        print(f"FAIL  allocation table: {exc}")
        return 1
    report = slices.slice_report(cfg, table)
    if report["enforced"]:
        print(f"ok    cgroup limits enforced ({report['mode']}), tree "
              f"{report['slices'][0]['path']}")
    else:
        problems += 1
        print(f"WARN  cgroup limits NOT enforced: {report['reason']}")
    run = cfg.run_dir
    if run.is_dir() and (run.stat().st_mode & 0o077) == 0:
        print(f"ok    run directory {run} is private (0700)")
    else:
        problems += 1
        print(f"WARN  run directory {run} is missing or not 0700")
    try:
        supervisor_rpc.process_table(cfg)
        print("ok    supervisord answers on its unix socket")
    except OSError as exc:
        print(f"WARN  supervisord not reachable: {exc}")
    return 0 if problems == 0 else 1


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

    p = sub.add_parser("bot", help="the trading bot")
    bsub = p.add_subparsers(dest="bot_cmd", required=True)
    c = bsub.add_parser("status", help="mode, feed, last bar and prediction, position, P&L, risk")
    c.add_argument("--json", action="store_true")
    for verb, text in (("pause", "open no new positions (exits still run)"),
                       ("resume", "allow new positions again"),
                       ("flatten", "close the position now at the last price")):
        bsub.add_parser(verb, help=text)
    p.set_defaults(func=cmd_bot)

    for verb, func, text in (("trades", cmd_trades, "fills, newest last"),
                             ("equity", cmd_equity, "equity snapshots")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("--since", help="epoch ms or ISO date (UTC)")
        p.add_argument("--limit", type=int, default=1000)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("train", help="train a model set from the store and promote it")
    p.add_argument("--from", dest="start", help="epoch ms or ISO date (UTC)")
    p.add_argument("--to", dest="end", help="epoch ms or ISO date (UTC), exclusive")
    p.add_argument("--if-missing", action="store_true", help="only when none is promoted yet")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cgexec", help="run CMD inside a slice of the allocation table")
    p.add_argument("slice")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(func=cmd_cgexec)

    p = sub.add_parser("cgroups", help="the allocation table applied to the kernel")
    csub = p.add_subparsers(dest="cg_cmd", required=True)
    for verb, text in (("apply", "create/update every slice (idempotent)"),
                       ("show", "every slice: limit, usage, peak, OOM kills, CPU")):
        c = csub.add_parser(verb, help=text)
        c.add_argument("--json", action="store_true")
    csub.add_parser("clean", help="remove the project's empty slices")
    p.set_defaults(func=cmd_cgroups)

    p = sub.add_parser("doctor", help="check config, allocation table, cgroups, run directory")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("config", help="configuration")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    c = csub.add_parser("show", help="the merged configuration and where it came from")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    # `bdt status | head` must end quietly, as any command-line tool does
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config()
        return args.func(cfg, args)
    except ConfigError as exc:
        print(f"bdt: configuration error: {exc}", file=sys.stderr)
        return 2
    except AllocationError as exc:
        print(f"bdt: allocation table error: {exc}", file=sys.stderr)
        return 2
    except BusError as exc:
        print(f"bdt: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
