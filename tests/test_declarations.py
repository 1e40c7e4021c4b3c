"""Everything declared once stays declared once: the program table (cgroups/allocation.toml)
against supervisord.conf, the bus's service list and docs/operations.md; each op (shared.protocol)
against its service's op_ methods, the bdt verbs and docs/bus.md. Each check is a function that
lists the disagreements, and each is shown to catch an edit to one copy alone."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

import shared.cli  # noqa: F401 - registers every verb
from scheduler.service import SchedulerService
from services.bot.service import BotService
from services.cache.service import CacheService
from services.history.service import HistoryService
from services.monitor.service import MonitorService
from services.predictor.service import PredictorService
from shared.bus.endpoints import SERVICES
from shared.bus.service import Service
from shared.cli.verbs import VERBS, build_parser
from shared.protocol import cache, docs
from shared.protocol.common import COMMON
from shared.protocol.ops import Arg, Op, OpTable
from shared.protocol.tables import TABLES
from shared.resources.allocation import load_allocation
from shared.resources.supervisor import read_conf

REPO = Path(__file__).resolve().parent.parent
SERVICE_CLASSES: list[type[Service]] = [CacheService, HistoryService, PredictorService,
                                        BotService, MonitorService, SchedulerService]
COMMAND = re.compile(r"^bdt cgexec --program %\(program_name\)s -- python -m ([\w.]+)")


def program_problems(programs_by_slice: dict[str, tuple[str, ...]],
                     conf: dict[str, dict[str, str]], services: tuple[str, ...],
                     operations_md: str) -> list[str]:
    """Disagreements between the allocation table (slice → programs) and its copies."""
    problems = []
    declared = {p: s for s, progs in programs_by_slice.items() for p in progs}
    if set(conf) != set(declared):
        problems.append(f"supervisord.conf programs {sorted(conf)} ≠ table {sorted(declared)}")
    for name, section in conf.items():
        m = COMMAND.match(section.get("command", ""))
        if not m:
            problems.append(f"[program:{name}] command does not run through bdt cgexec "
                            f"--program: {section.get('command')!r}")
        elif importlib.util.find_spec(m.group(1)) is None:
            problems.append(f"[program:{name}] runs module {m.group(1)}, which does not exist")
    if set(services) != set(declared):
        problems.append(f"bus SERVICES {sorted(services)} ≠ table {sorted(declared)}")
    documented: dict[str, str] = {}
    for row in re.findall(r"^\| ([a-z, ]+) \| ([a-z]+) \|", operations_md, re.M)[1:]:
        for program in row[0].split(","):
            documented[program.strip()] = row[1]
    if documented != declared:
        problems.append(f"docs/operations.md program → slice {documented} ≠ table {declared}")
    return problems


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


def real_programs() -> dict[str, tuple[str, ...]]:
    return {s.name: s.programs for s in load_allocation().slices.values()}


def test_the_program_table_and_its_copies_agree():
    assert program_problems(real_programs(), read_conf(), SERVICES,
                            (REPO / "docs" / "operations.md").read_text()) == []


def test_a_copy_of_the_program_table_edited_alone_is_caught():
    programs, conf = real_programs(), read_conf()
    ops_md = (REPO / "docs" / "operations.md").read_text()
    extra = {**programs, "batch": (*programs["batch"], "optimize")}   # table edited alone
    assert any("supervisord.conf programs" in p for p in
               program_problems(extra, conf, SERVICES, ops_md))
    assert any("bus SERVICES" in p for p in program_problems(extra, conf, SERVICES, ops_md))
    broken = {**conf, "cache": {**conf["cache"], "command": "bdt cgexec cache -- python -m "
                                                            "services.cache"}}
    assert any("does not run through" in p for p in
               program_problems(programs, broken, SERVICES, ops_md))
    moved = ops_md.replace("| history | history |", "| history | cache |")
    assert any("docs/operations.md" in p for p in
               program_problems(programs, conf, SERVICES, moved))


def test_ops_methods_verbs_and_docs_agree():
    tables = [*TABLES.values(), OpTable("common", {op.name: op for op in COMMON})]
    assert op_problems(SERVICE_CLASSES, tables, VERBS,
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
