"""``bdt job list|run|history|cancel``: the scheduler's jobs and their runs."""

from __future__ import annotations

import argparse

from shared.cli.render import mib, print_json, table, ts_text
from shared.cli.verbs import JSON, op_verb, send
from shared.config import Config
from shared.protocol import scheduler


def _at(epoch_s: float | None) -> str:
    return ts_text(None if epoch_s is None else epoch_s * 1000, seconds=True)


def _run_line(r: dict) -> str:
    return (f"run {r['id']} {r['job']} [{r['trigger']}] slot {r['slot']}: {r['state']}"
            + (f" — {r['reason']}" if r.get("reason") else ""))


@op_verb(scheduler.OPS, "jobs", JSON)
def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    jobs = send(cfg, args)
    if args.json:
        print_json(jobs)
        return 0
    table([[j["job"], j["schedule"], j["timezone"], f"{j['limit_s'] / 60:g} min",
            j["next_run"] or "-", (j["last"] or {}).get("state", "-")] for j in jobs],
          ["job", "schedule", "timezone", "limit", "next run", "last outcome"])
    return 0


@op_verb(scheduler.OPS, "history", JSON)
def cmd_history(cfg: Config, args: argparse.Namespace) -> int:
    runs = send(cfg, args)
    if args.json:
        print_json(runs)
        return 0
    table([[r["id"], r["job"], r["trigger"], r["slot"], r["state"], _at(r["started_at"]),
            "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}s",
            f"{mib(r['peak_bytes'])}/{mib(r['cap_bytes'])}", (r["reason"] or "")[:60]]
           for r in runs],
          ["id", "job", "trigger", "slot", "outcome", "started (UTC)", "took", "peak/cap",
           "reason"])
    return 0


@op_verb(scheduler.OPS, "run")
def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    print(_run_line(send(cfg, args)))
    return 0


@op_verb(scheduler.OPS, "cancel")
def cmd_cancel(cfg: Config, args: argparse.Namespace) -> int:
    print(_run_line(send(cfg, args)))
    return 0
