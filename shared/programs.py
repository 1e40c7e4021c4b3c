"""The program table: every program supervisord runs, declared once.

Each row says what the program runs (``python -m MODULE``), its kind, its tcp port offset on
the bus, its start order, and — for a batch job — the config keys of its schedule and of its
one time limit. What a kind means (autostart, autorestart, whether it answers the bus, whether
the monitor may restart it or stops it in critical mode) is declared once in ``KINDS``.

Derived from it, never written again: ``shared.bus.endpoints.SERVICES`` and ``NOT_SERVING``,
``shared.jobs.schedule.JOBS`` and the job table, the batch programs' registry
(services/batch/jobs.py), the monitor's status list, the defaults of ``monitor.never_restart``
and ``monitor.stop_in_critical``, the config rules of each job's keys, the deploy pre-flight's
and the bench's always-on slices, supervisord.conf's ``[group]`` and ``[program:x]`` sections
and docs/operations.md's process table (``python -m shared.resources.process_table --write``
writes both; tests/test_declarations.py fails when either differs from this table). This module
imports nothing of the project: every layer may read it.

Which slice a program runs in is a resource decision and stays where the limits are: the
``programs`` list of its slice in cgroups/allocation.toml (tests/test_declarations.py holds the
two to the same names).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_PORTS = 32          # bus.tcp_base_port leaves 64 ports: a request and a stream port each
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_KEY = re.compile(r"^[a-z_]+\.[a-z0-9_]+$")


@dataclass(frozen=True)
class Kind:
    """What a kind of program is to supervisord, the bus and the monitor."""

    name: str
    help: str
    autostart: bool          # started with the stack
    autorestart: str         # supervisord's autorestart: "true", "false" or "unexpected"
    startsecs: int           # up this long = RUNNING (a service: covers its slowest start)
    startretries: int
    serves: bool             # answers requests on the bus (`bdt status` asks it)
    never_restart: bool      # over budget: the monitor alerts, never restarts it
    stop_in_critical: bool   # the monitor stops it in critical resource mode
    takes_name: bool = False  # run as `python -m MODULE NAME`: one module, several programs


SERVICE = Kind("service", "always on, answers the bus; the monitor may restart it",
               autostart=True, autorestart="true", startsecs=15, startretries=5, serves=True,
               never_restart=False, stop_in_critical=False)
JOB = Kind("job", "a batch job: started by the scheduler or by hand, runs and exits; never "
           "restarted (by supervisord or the monitor), stopped in critical mode",
           autostart=False, autorestart="false", startsecs=0, startretries=0, serves=False,
           never_restart=True, stop_in_critical=True, takes_name=True)
UI = Kind("ui", "on demand (`bdt dashboard start`), a web server, not on the bus",
          autostart=False, autorestart="unexpected", startsecs=1, startretries=1, serves=False,
          never_restart=False, stop_in_critical=False)
KINDS = {k.name: k for k in (SERVICE, JOB, UI)}


@dataclass(frozen=True)
class Program:
    """One program: what it runs and how it is treated (its kind)."""

    name: str                # the supervisord program, the bus service, the log file
    kind: Kind
    module: str              # run as `python -m MODULE` (a job: `python -m MODULE NAME`)
    port: int                # tcp port offset: bus.tcp_base_port + 2 × port (+1: its stream)
    priority: int            # supervisord's start order
    schedule_key: str = ""   # a job: the config key of its schedule
    limit_key: str = ""      # a job: the config key of its one time limit, in minutes

    @property
    def argv(self) -> list[str]:
        """The command after ``bdt cgexec --program NAME --``."""
        return ["python", "-m", self.module, *([self.name] if self.kind.takes_name else [])]


class ProgramTableError(ValueError):
    """The program table is malformed, or a name is not in it (the message names the choices)."""


def _table(*rows: Program) -> dict[str, Program]:
    """The rows by name, checked: unique names and ports, and keys exactly on the jobs."""
    out: dict[str, Program] = {}
    ports: dict[int, str] = {}
    for p in rows:
        where = f"program {p.name!r}"
        if not _NAME.match(p.name) or p.name in out:
            raise ProgramTableError(f"{where}: a new name matching {_NAME.pattern} expected")
        if not 0 <= p.port < MAX_PORTS or p.port in ports:
            raise ProgramTableError(f"{where}: port {p.port} is taken by {ports.get(p.port)} "
                                    f"or outside 0..{MAX_PORTS - 1}")
        is_job = p.kind is JOB
        keys = (p.schedule_key, p.limit_key)
        if is_job and not (all(map(_KEY.match, keys)) and p.limit_key.endswith("_min")):
            raise ProgramTableError(f"{where}: a job needs schedule_key and limit_key "
                                    "(section.key; the limit in minutes, a key ending _min)")
        if not is_job and any(keys):
            raise ProgramTableError(f"{where}: only a job has a schedule and a time limit")
        out[p.name] = p
        ports[p.port] = p.name
    return out


# The order is supervisord's group order and `bdt status`'s. A port offset is never reused:
# a new program takes the next free one.
PROGRAMS: dict[str, Program] = _table(
    Program("cache", SERVICE, "services.cache", port=0, priority=10),
    Program("history", SERVICE, "services.history", port=1, priority=20),
    Program("predictor", SERVICE, "services.predictor", port=2, priority=30),
    Program("bot", SERVICE, "services.bot", port=3, priority=40),
    Program("monitor", SERVICE, "services.monitor", port=4, priority=50),
    Program("scheduler", SERVICE, "scheduler", port=5, priority=60),
    Program("backtest", JOB, "services.batch", port=6, priority=90,
            schedule_key="scheduler.backtest_schedule",
            limit_key="scheduler.backtest_limit_min"),
    Program("walkforward", JOB, "services.batch", port=7, priority=91,
            schedule_key="scheduler.walkforward_schedule",
            limit_key="scheduler.walkforward_limit_min"),
    Program("dashboard", UI, "services.dashboard", port=8, priority=95),
)


def program(name: str) -> Program:
    """The row of ``name``; ProgramTableError naming every program otherwise."""
    try:
        return PROGRAMS[name]
    except KeyError:
        raise ProgramTableError(f"unknown program {name!r}; programs: "
                                f"{', '.join(PROGRAMS)}") from None


def jobs() -> tuple[Program, ...]:
    """The batch jobs, in table order."""
    return tuple(p for p in PROGRAMS.values() if p.kind is JOB)


def job(name: str) -> Program:
    """The row of job ``name``; ProgramTableError naming every job otherwise."""
    found = PROGRAMS.get(name)
    if found is None or found.kind is not JOB:
        raise ProgramTableError(f"unknown job {name!r}; jobs: "
                                f"{', '.join(p.name for p in jobs())}")
    return found


def config_defaults() -> dict[str, list[str]]:
    """Config defaults that are this table's restart policy (shared/config.py sets them
    before any override: an operator may still list other programs, e.g. a test's)."""
    return {"monitor.never_restart": [p.name for p in PROGRAMS.values() if p.kind.never_restart],
            "monitor.stop_in_critical": [p.name for p in PROGRAMS.values()
                                         if p.kind.stop_in_critical]}


def always_on_slices(slices: Iterable[Any]) -> list[str]:
    """The names of the slices (allocation.Slice) holding a program started with the stack:
    what the stack may use while no job and no on-demand program runs."""
    return [s.name for s in slices if any(program(p).kind.autostart for p in s.programs)]
