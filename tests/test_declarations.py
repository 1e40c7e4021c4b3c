"""Everything declared once stays declared once: the program table (shared/programs.py)
against what is written from it (supervisord.conf, docs/operations.md's process table), the
slices' program lists (cgroups/allocation.toml), the batch programs' registry, each serving
program's Service class and the config keys its jobs name; each op (shared.protocol) against
its service's op_ methods, the bdt verbs and docs/bus.md. Each check is a function that lists
the disagreements, and each is shown to catch an edit to one copy alone."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

import shared.cli  # noqa: F401 - registers every verb
from services.batch.jobs import REGISTRY, BatchJob, registered
from services.cache.service import CacheService
from shared import programs
from shared.bus.endpoints import NOT_SERVING, SERVICES, endpoint
from shared.bus.service import Service
from shared.cli.verbs import VERBS, build_parser
from shared.config import ConfigError, load_config
from shared.jobs.schedule import JOBS
from shared.programs import JOB, PROGRAMS, SERVICE, Program, ProgramTableError
from shared.protocol import cache, docs
from shared.protocol.common import COMMON
from shared.protocol.ops import Arg, Op, OpTable
from shared.protocol.tables import TABLES
from shared.resources import process_table
from shared.resources.allocation import load_allocation

REPO = Path(__file__).resolve().parent.parent


def service_classes(table: dict[str, Program] = PROGRAMS) -> list[type[Service]]:
    """Each serving program's Service class: the one in ``MODULE.service`` named after it."""
    found = []
    for p in table.values():
        if p.kind.serves and importlib.util.find_spec(f"{p.module}.service") is not None:
            module = importlib.import_module(f"{p.module}.service")
            found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                      if issubclass(c, Service) and c.__module__ == module.__name__
                      and c.name == p.name]
    return found


def placement_problems(table: Iterable[str], slices: dict[str, tuple[str, ...]]) -> list[str]:
    """The program table against the slices' program lists (slice → programs)."""
    placed = [p for progs in slices.values() for p in progs]
    problems = [f"program {p!r} is in no slice of cgroups/allocation.toml"
                for p in table if p not in placed]
    problems += [f"slice {s!r} lists {p!r}, which is not in the program table"
                 for s, progs in slices.items() for p in progs if p not in table]
    return problems


def generated_problems(conf_text: str, operations_md: str,
                       table: dict[str, Program] = PROGRAMS,
                       slices: dict[str, str] | None = None) -> list[str]:
    """supervisord.conf's sections and docs/operations.md's table against the program table."""
    problems = []
    got, want = process_table.conf_current(conf_text), process_table.conf_block(table)
    if got != want:
        problems.append("supervisord.conf's [group] and [program:x] sections are not the "
                        "program table's (python -m shared.resources.process_table --write): "
                        + _first_diff(got, want))
    got, want = process_table.docs_current(operations_md), process_table.docs_block(table, slices)
    if got != want:
        problems.append("docs/operations.md's process table is not the program table's: "
                        f"{_first_diff(got, want)}")
    return problems


def _first_diff(got: str | None, want: str) -> str:
    if got is None:
        return "the generated part is missing"
    for n, (a, b) in enumerate(zip(got.splitlines(), want.splitlines(), strict=False), 1):
        if a != b:
            return f"line {n}: {a!r}, expected {b!r}"
    return f"{len(got.splitlines())} lines, expected {len(want.splitlines())}"


def program_problems(table: dict[str, Program], classes: list[type[Service]]) -> list[str]:
    """Each program's module exists; each serving program has its Service class, and only
    those."""
    problems = [f"program {p.name!r} runs module {p.module}, which does not exist"
                for p in table.values() if importlib.util.find_spec(p.module) is None]
    named = [c.name for c in classes]
    serving = [p.name for p in table.values() if p.kind.serves]
    problems += [f"serving program {n!r} has no Service class named {n!r} in its "
                 "MODULE.service" for n in serving if named.count(n) != 1]
    problems += [f"Service class {c.__name__} ({c.name!r}) is no serving program of the table"
                 for c in classes if c.name not in serving]
    return problems


def job_problems(table: dict[str, Program], registry: dict[str, BatchJob],
                 defaults: dict[str, dict]) -> list[str]:
    """The table's jobs against the batch registry and the config keys they name."""
    jobs = {p.name: p for p in table.values() if p.kind is JOB}
    problems = [f"job {n!r} has no @batch_job function in services/batch/jobs.py"
                for n in jobs if n not in registry]
    problems += [f"@batch_job({n!r}) is no job of the program table" for n in registry
                 if n not in jobs]
    problems += [f"@batch_job({n!r}) limits by {b.limit_key}, its row by "
                 f"{jobs[n].limit_key}" for n, b in registry.items()
                 if n in jobs and b.limit_key != jobs[n].limit_key]
    for p in jobs.values():
        for key in (p.schedule_key, p.limit_key):
            section, _, name = key.partition(".")
            if name not in defaults.get(section, {}):
                problems.append(f"job {p.name!r} names config key {key}, which "
                                "shared/defaults.toml does not have")
    return problems


def real_slices() -> dict[str, tuple[str, ...]]:
    return {s.name: s.programs for s in load_allocation().slices.values()}


def test_the_program_table_and_its_copies_agree():
    assert placement_problems(PROGRAMS, real_slices()) == []
    assert generated_problems((REPO / "supervisord.conf").read_text(),
                              (REPO / "docs" / "operations.md").read_text()) == []
    assert program_problems(PROGRAMS, service_classes()) == []
    assert job_problems(PROGRAMS, REGISTRY, load_config({}).as_dict()) == []


def without(name: str) -> dict[str, Program]:
    return {n: p for n, p in PROGRAMS.items() if n != name}


def test_a_copy_of_the_program_table_edited_alone_is_caught():
    slices, defaults = real_slices(), load_config({}).as_dict()
    conf = (REPO / "supervisord.conf").read_text()
    ops_md = (REPO / "docs" / "operations.md").read_text()
    # walkforward dropped from the table alone: its slice, the conf, the docs and the batch
    # registry still have it
    table = without("walkforward")
    assert any("'walkforward'" in p for p in placement_problems(table, slices))
    assert len(generated_problems(conf, ops_md, table)) == 2
    assert any("@batch_job('walkforward')" in p for p in job_problems(table, REGISTRY,
                                                                      defaults))
    # … or from one copy alone
    assert any("'walkforward'" in p for p in placement_problems(
        PROGRAMS, {**slices, "batch": ("backtest",)}))
    assert any("'optimize'" in p for p in placement_problems(
        PROGRAMS, {**slices, "batch": (*slices["batch"], "optimize")}))
    cut = conf.replace(",walkforward,", ",").split("[program:walkforward]")[0] + \
        "[program:dashboard]" + conf.split("[program:dashboard]")[1]
    assert "walkforward" not in cut
    assert any("supervisord.conf" in p for p in generated_problems(cut, ops_md))
    for edit in (("autostart=false", "autostart=true"), ("python -m services.cache",
                                                         "python -m services.cachex")):
        assert any("supervisord.conf" in p for p in
                   generated_problems(conf.replace(*edit, 1), ops_md))
    moved = ops_md.replace("| history | service | history |", "| history | service | cache |")
    assert moved != ops_md and any("docs/operations.md" in p for p in
                                   generated_problems(conf, moved))
    registry = {n: b for n, b in REGISTRY.items() if n != "walkforward"}
    assert any("no @batch_job" in p for p in job_problems(PROGRAMS, registry, defaults))
    no_key = {s: dict(v) for s, v in defaults.items()}
    del no_key["scheduler"]["walkforward_limit_min"]
    assert any("walkforward_limit_min" in p for p in job_problems(PROGRAMS, REGISTRY, no_key))
    # a serving program without its Service class, a module that does not exist
    ghost = {**PROGRAMS, "ghost": Program("ghost", SERVICE, "services.ghost", 9, 70)}
    problems = program_problems(ghost, service_classes(PROGRAMS))
    assert any("services.ghost" in p for p in problems)
    assert any("no Service class named 'ghost'" in p for p in problems)


def test_everything_reads_the_one_table():
    """The names other modules use are the table's, whatever it holds."""
    from services.monitor.statuses import READ
    from shared.programs import always_on_slices

    assert tuple(PROGRAMS) == SERVICES and tuple(p.name for p in programs.jobs()) == JOBS
    assert set(NOT_SERVING) == {n for n, p in PROGRAMS.items() if not p.kind.serves}
    assert set(READ) == {n for n, p in PROGRAMS.items() if p.kind.serves} - {"monitor"}
    cfg = load_config({})
    assert cfg.get("monitor.never_restart") == cfg.get("monitor.stop_in_critical") == list(JOBS)
    table = load_allocation()
    assert set(always_on_slices(table.slices.values())) == {
        table.slice_for_program(n).name for n, p in PROGRAMS.items() if p.kind.autostart}


def test_the_restart_policy_is_not_written_again_in_the_defaults(tmp_path, monkeypatch):
    """monitor.never_restart and stop_in_critical default to the table's policy: a copy of
    them in shared/defaults.toml is refused (it would drift), an override is not."""
    import shared.config

    copy = tmp_path / "defaults.toml"
    copy.write_text(shared.config.DEFAULTS_PATH.read_text().replace(
        "[monitor]\n", '[monitor]\nnever_restart = ["backtest"]\n'))
    monkeypatch.setattr(shared.config, "DEFAULTS_PATH", copy)
    with pytest.raises(ConfigError, match="monitor.never_restart in .*program table"):
        load_config({})
    monkeypatch.undo()
    assert load_config({"BDT_MONITOR__NEVER_RESTART": "hog"}).get("monitor.never_restart") == \
        ["hog"]


def test_the_copies_of_the_job_list_that_remain_agree_with_it():
    """Two copies outside this refactor's reach stay tied: the scheduler's batch slice
    (scheduler/watch.py reads the peak and OOM count there) holds every job, and the help of
    `bdt job run`'s argument names each job."""
    from scheduler.watch import SLICE
    from shared.protocol.scheduler import OPS

    table = load_allocation()
    assert {table.slice_for_program(j).name for j in JOBS} == {SLICE}
    helped = OPS["run"].args[0].help
    assert [j for j in JOBS if j not in helped] == [], helped


def test_an_unknown_program_or_job_is_an_error_naming_the_choices():
    with pytest.raises(ProgramTableError, match="unknown program 'ghost'; programs: cache, "):
        programs.program("ghost")
    with pytest.raises(ProgramTableError, match="unknown job 'cache'; jobs: backtest, "
                                                "walkforward"):
        programs.job("cache")
    with pytest.raises(ProgramTableError, match="unknown job 'optimize'; jobs: backtest"):
        registered("optimize")
    with pytest.raises(ConfigError, match="unknown service 'ghost'; known: cache, history"):
        endpoint(load_config({}), "ghost")
    out = subprocess.run([sys.executable, "-m", "services.batch", "optimize"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "jobs: backtest, walkforward" in out.stderr, out.stderr


def test_a_malformed_program_table_is_refused_naming_the_row():
    row = Program("x", SERVICE, "services.x", 0, 1)
    for rows, text in (((row, row), "a new name"),
                       ((row, dataclasses.replace(row, name="y")), "port 0 is taken by x"),
                       ((dataclasses.replace(row, port=32),), "outside 0..31"),
                       ((dataclasses.replace(row, kind=JOB),), "a job needs schedule_key"),
                       ((dataclasses.replace(row, kind=JOB, schedule_key="scheduler.x_schedule",
                                             limit_key="scheduler.x_limit_s"),), "_min"),
                       ((dataclasses.replace(row, limit_key="scheduler.x_limit_min"),),
                        "only a job")):
        with pytest.raises(ProgramTableError, match=text):
            programs._table(*rows)


def test_each_job_has_one_time_limit():
    """The backtest's old second limit is refused naming the one that replaced it, and the
    job's own watchdog is its one limit plus the scheduler's stop grace (the scheduler, when
    alive, always stops it first)."""
    for env in ({"BDT_BACKTEST__TIME_LIMIT_S": "3600"},):
        with pytest.raises(ConfigError, match="backtest.time_limit_s .* was removed; set "
                                              "scheduler.backtest_limit_min"):
            load_config(env)
    cfg = load_config({"BDT_SCHEDULER__BACKTEST_LIMIT_MIN": "2", "BDT_SCHEDULER__STOP_GRACE_S":
                       "15"})
    assert registered("backtest").watchdog_s(cfg) == 135
    assert registered("walkforward").watchdog_s(cfg) == 120 * 60 + 15


def op_problems(classes: list[type[Service]], tables: list[OpTable], verbs: dict,
                bus_md: str) -> list[str]:
    """Disagreements between op declarations, service methods, bdt verbs and docs/bus.md."""
    problems = []
    for cls in classes:
        methods = {n[3:] for n in dir(cls) if n.startswith("op_")}
        declared = {op.name for op in cls.ops}
        if methods != declared:
            problems.append(f"{cls.name}: op_ methods {sorted(methods)} ≠ declared "
                            f"{sorted(declared)}")
    for table in tables:
        for op in table:
            if op.verb and (op.verb not in verbs or verbs[op.verb].op != op):
                problems.append(f"{table.service}.{op.name}: verb 'bdt {op.verb}' is not "
                                "built from it")
    for words, v in verbs.items():
        if v.op is not None and v.op.verb != words:
            problems.append(f"bdt {words} sends {v.op.name}, which names verb {v.op.verb!r}")
    if docs.current_block(bus_md) != docs.render():
        problems.append("docs/bus.md's op tables are not the declarations' "
                        "(python -m shared.protocol.docs --write)")
    return problems


def test_ops_methods_verbs_and_docs_agree():
    tables = [*TABLES.values(), OpTable("common", {op.name: op for op in COMMON})]
    assert op_problems(service_classes(), tables, VERBS,
                       (REPO / "docs" / "bus.md").read_text()) == []


def test_an_op_edited_in_one_place_is_caught():
    bus_md = (REPO / "docs" / "bus.md").read_text()
    tables = list(TABLES.values())
    # a method without a declaration
    rogue = type("Rogue", (CacheService,), {"op_evict_all": lambda self, args: None})
    assert any("op_ methods" in p for p in op_problems([rogue], tables, VERBS, bus_md))
    # a declaration edited without the CLI (its verb renamed)
    get = cache.OPS["get"]
    renamed = OpTable("cache", {**cache.OPS.ops, "get": dataclasses.replace(get,
                                                                          verb="cache fetch")})
    assert any("not built from it" in p for p in op_problems([], [renamed], VERBS, bus_md))
    # the docs edited by hand
    assert any("docs/bus.md" in p for p in
               op_problems([], tables, VERBS, bus_md.replace("`bdt cache get`", "`bdt get`")))


def test_each_verb_takes_exactly_its_ops_arguments():
    parser = build_parser()
    for words, v in VERBS.items():
        if v.op is None:
            continue
        sub = parser
        for word in words.split():
            sub = next(a for a in sub._actions if a.dest.startswith("cmd")).choices[word]
        dests = {a.dest for a in sub._actions} - {"help", "json", "service"}
        assert dests == {a.name for a in v.op.args}, words


def test_server_checks_arguments_against_the_declaration():
    op = Op("demo", "x", (Arg("n", int, "count", minimum=1), Arg("tag", str, "t", "")),
            verb="demo")
    assert op.check({"n": 3}) == {"n": 3, "tag": ""}
    for bad, text in (({}, "missing argument 'n'"), ({"n": True}, "must be int"),
                      ({"n": 0}, "≥ 1"), ({"n": 1, "x": 2}, "unknown argument")):
        with pytest.raises(ValueError, match=text):
            op.check(bad)


def test_events_and_op_arguments_follow_one_type_rule():
    """A bool is not an int (msgpack's true is not 1) in an op's arguments and in an event's
    fields alike; where bool is declared, it is accepted."""
    from shared.protocol.events import EventError, event

    base = {"job": "backtest", "run_id": 1, "outcome": "ok", "duration_s": 1.5}
    assert event("job_finished", **{**base, "duration_s": 2})["duration_s"] == 2  # int or float
    with pytest.raises(EventError, match="field 'run_id' must be int, got True"):
        event("job_finished", **{**base, "run_id": True})
    op = Op("demo", "x", (Arg("flag", bool, "f"), Arg("n", (int, type(None)), "n", None)),
            verb="demo")
    assert op.check({"flag": True, "n": None}) == {"flag": True, "n": None}
    with pytest.raises(ValueError, match="must be int or null, got bool"):
        op.check({"flag": True, "n": False})


def test_the_strategy_names_config_accepts_are_the_plug_ins():
    from shared.config import CHOICES
    from shared.trading.strategies import STRATEGIES

    assert CHOICES["strategy.name"] == STRATEGIES
