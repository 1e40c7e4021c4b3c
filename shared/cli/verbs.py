"""The registry of ``bdt`` verbs (freqtrade's one-declaration-per-option idea, circus's
commands): each verb is declared once with ``@verb``; a verb that sends a bus op takes its
arguments, help and defaults from the op's declaration in ``shared.protocol``, so the CLI
cannot drift from what the server accepts. Ops with a ``verb`` that no module renders get a
generic one that prints the reply as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.bus.client import BusClient
from shared.bus.endpoints import SERVICES
from shared.cli.render import parse_when, print_json
from shared.config import Config
from shared.protocol.common import COMMON
from shared.protocol.ops import NUMBER, Arg, Op, OpTable

Run = Callable[[Config, argparse.Namespace], int]


@dataclass
class Verb:
    """One ``bdt`` command: its words ("cache get"), help, what it runs, and — for a verb that
    sends an op — the service's table and the op."""

    words: str
    help: str
    run: Run
    table: OpTable | None = None
    op: Op | None = None
    options: Sequence[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=tuple)

    @property
    def service_arg(self) -> bool:
        """Common ops (ping, latency) are sent to the service named on the command line."""
        return self.op is not None and self.op in COMMON


VERBS: dict[str, Verb] = {}


def verb(words: str, help: str, *options: tuple[tuple[str, ...], dict[str, Any]]):
    """Declare a verb that is not an op (status, doctor, cgexec …); ``options`` are argparse
    ``(flags, kwargs)`` pairs."""
    def register(run: Run) -> Run:
        _add(Verb(words, help, run, options=options))
        return run
    return register


def op_verb(table: OpTable, name: str, *options: tuple[tuple[str, ...], dict[str, Any]]):
    """Declare how the verb of ``table``'s op ``name`` runs; its arguments come from the op,
    ``options`` add presentation flags that are never sent (``--json``)."""
    op = table[name]

    def register(run: Run) -> Run:
        _add(Verb(op.verb, op.help, run, table, op, options))
        return run
    return register


def opt(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """An argparse argument of a verb: ``add_argument(*flags, **kwargs)``."""
    return flags, kwargs


JSON = opt("--json", action="store_true")      # machine-readable output, where a verb offers it


def _add(v: Verb) -> None:
    if v.words in VERBS:
        raise ValueError(f"bdt {v.words} declared twice")
    VERBS[v.words] = v


def add_generic_verbs(tables: Sequence[OpTable]) -> None:
    """Every op that names a verb no module declared: send it, print the reply as JSON."""
    for table in tables:
        for op in table:
            if op.verb and op.verb not in VERBS:
                def run(cfg: Config, ns: argparse.Namespace) -> int:
                    print_json(send(cfg, ns))
                    return 0
                _add(Verb(op.verb, op.help, run, table, op))


def send(cfg: Config, ns: argparse.Namespace, **overrides: Any) -> Any:
    """Send the verb's op with the arguments parsed from the command line."""
    v: Verb = ns.verb
    assert v.op is not None and v.table is not None
    service = ns.service if v.service_arg else v.table.service
    args = {a.name: getattr(ns, a.name) for a in v.op.args}
    args.update(overrides)
    return call_service(cfg, service, v.op.name, **args)


STARTING = ("STARTING", "BACKOFF")      # supervisord: started, not yet RUNNING
WAIT_AFTER_STARTSECS_S = 15.0


def call_service(cfg: Config, service: str, op: str, **args: Any) -> Any:
    """``op`` on ``service``, waiting a bounded time while supervisord says the program is
    still starting (STARTING or BACKOFF: its ``startsecs`` not yet over): "starting" is said
    once on stderr, and the call is tried again until the program's ``startsecs`` plus
    ``WAIT_AFTER_STARTSECS_S`` have passed. Raises the bus's error when the service is down
    for another reason (STOPPED, FATAL, no supervisord) or is still not serving then."""
    import sys
    import time

    from shared.bus.client import ServiceUnavailable
    from shared.programs import program

    deadline = None
    while True:
        try:
            with BusClient(service, cfg) as client:
                return client.call(op, **args)
        except ServiceUnavailable:
            state = _program_state(cfg, service)
            if state not in STARTING:
                raise
            if deadline is None:
                wait_s = program(service).kind.startsecs + WAIT_AFTER_STARTSECS_S
                deadline = time.monotonic() + wait_s
                print(f"bdt: {service} is starting (supervisord: {state}); waiting up to "
                      f"{wait_s:.0f} s", file=sys.stderr)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _program_state(cfg: Config, program: str) -> str | None:
    """supervisord's state of ``program`` (RUNNING, STARTING, …); None when supervisord does
    not answer or has no such program."""
    import xmlrpc.client

    from shared.resources import supervisor

    try:
        info = supervisor.connect(cfg).supervisor.getProcessInfo(f"{supervisor.GROUP}:{program}")
    except (OSError, xmlrpc.client.Fault):
        return None
    return info.get("statename")


def _converter(arg: Arg) -> Callable[[str], Any]:
    kinds = set(arg.kinds) - {type(None)}
    if arg.unit == "ms":
        return parse_when
    if kinds & {list, dict}:
        return json.loads
    if kinds == {int}:
        return int
    if kinds & set(NUMBER):
        return float
    return str


def _add_op_args(parser: argparse.ArgumentParser, v: Verb) -> None:
    assert v.op is not None
    if v.service_arg:
        parser.add_argument("service", choices=SERVICES, help="which service")
    for arg in v.op.args:
        text = arg.help.replace(" (epoch ms)", "") + (" (epoch ms or an ISO date, UTC)"
                                                       if arg.unit == "ms" else "")
        conv = _converter(arg)
        if arg.cli == "positional":
            parser.add_argument(arg.name, type=conv, help=text)
        elif arg.cli == "many":
            parser.add_argument(arg.name, type=conv, nargs="+", help=text)
        else:
            flag = "--" + arg.name.replace("_", "-")
            if arg.required:
                parser.add_argument(flag, dest=arg.name, type=conv, required=True, help=text)
            else:
                parser.add_argument(flag, dest=arg.name, type=conv, default=arg.default,
                                    help=f"{text} (default {arg.default!r})")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``bdt`` parser from the registry: "cache get" becomes ``bdt cache get``."""
    parser = argparse.ArgumentParser(prog="bdt", description="bitdaytrader operator commands")
    groups: dict[str, argparse._SubParsersAction] = {}
    root = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for words in sorted(VERBS):
        v = VERBS[words]
        *path, last = words.split()
        subs, prefix = root, ""
        for word in path:
            prefix = f"{prefix} {word}".strip()
            if prefix not in groups:
                group = subs.add_parser(word, help=f"{prefix} …")
                groups[prefix] = group.add_subparsers(dest=f"cmd_{prefix}", required=True,
                                                      metavar="COMMAND")
            subs = groups[prefix]
        p = subs.add_parser(last, help=v.help, description=v.help)
        if v.op is not None:
            _add_op_args(p, v)
        for flags, kwargs in v.options:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(verb=v)
    return parser
