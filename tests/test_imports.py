"""The shape of shared/'s imports: no import circle among its modules, and no import from a
lower layer to a higher one. ``LAYERS`` below is the one declaration of the order. Every
import counts — at the top, inside a function, under ``TYPE_CHECKING`` — since each is an
arrow a reader must follow and a circle waiting to close. A failure names the circle
(a → b → a) or the arrow (module → module, layer → layer).

``KNOWN`` lists what is still wrong, each with why; the test fails for anything new, and for an
entry that no longer happens (delete it)."""

from __future__ import annotations

import ast
import functools

from tests.helpers import REPO

# Lowest first. A module belongs to the layer of the longest prefix that names it, and may
# import its own layer and those below. ``shared.protocol.docs`` is a generator no program
# imports (it reads the stores' declaration), so it sits with the CLI.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("shared.protocol",),                       # what crosses a process boundary
    ("shared.programs",),                       # the program table
    ("shared.config", "shared.logs"),
    ("shared.resources",),                      # allocation, cgroups, supervisord
    ("shared.bus",),
    ("shared.market",),
    ("shared.formatting",),
    ("shared.trading",),
    ("shared.storage",),                        # bar store, trading state, importing
    ("shared.jobs", "shared.models"),
    ("shared.backtest",),
    ("shared.cli", "shared.protocol.docs"),
    ("services", "scheduler", "bench", "deploy", "tests"),   # never imported by shared
)

# Still wrong, kept visible: (importer, imported) → why. Remove an entry when it is fixed.
KNOWN: dict[tuple[str, str], str] = {
}


def module_name(path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


@functools.cache
def shared_modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p))
            for p in sorted((REPO / "shared").rglob("*.py"))}


def imports_of(module: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The modules ``tree`` imports anywhere, each resolved to the most specific module
    that exists in ``known`` (``from shared.protocol import errors`` is shared.protocol.errors)
    or, outside it, to its top-level package when that is a project folder."""
    package = module if module in {m.rsplit(".", 1)[0] for m in known} else \
        module.rpartition(".")[0]
    out: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                out.add(".".join(parts[:i]))
                return
        if parts[0] in LAYERS[-1]:
            out.add(parts[0])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*anchor, base]))
            for alias in node.names:
                add(f"{base}.{alias.name}")
    out.discard(module)
    return out


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    return {m: imports_of(m, t, set(trees)) for m, t in trees.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan), as a path that
    starts and ends at the group's first module: [a, b, c, a]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:                    # breadth first, back to start within the group
            v = queue.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    out.append([*paths[v], start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
    return sorted(out)


def layer_of(module: str) -> tuple[int, str] | None:
    """(the layer's place in LAYERS, the prefix that put the module there), or None."""
    if module == "shared":
        return 0, "shared"                       # the package itself: a docstring
    best: tuple[int, str] | None = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and \
                    (best is None or len(prefix) > len(best[1])):
                best = (i, prefix)
    return best


def upward(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    """Every import from a lower layer to a higher one, with the layers named; a module in
    no layer is reported too."""
    out = {}
    for module, imported in graph.items():
        mine = layer_of(module)
        if mine is None:
            out[(module, "")] = f"{module} is in no layer of LAYERS"
            continue
        for other in imported:
            theirs = layer_of(other)
            if theirs is not None and theirs[0] > mine[0]:
                out[(module, other)] = (f"{module} → {other}: layer {mine[1]} imports the "
                                        f"higher layer {theirs[1]}")
    return out


def import_problems(graph: dict[str, set[str]], known: dict[tuple[str, str], str]) -> list[str]:
    problems = []
    for path in circles(graph):
        arrows = set(zip(path, path[1:], strict=False))
        if not arrows & set(known):
            problems.append("import circle: " + " → ".join(path))
    found = upward(graph)
    problems += [text for arrow, text in sorted(found.items()) if arrow not in known]
    problems += [f"KNOWN lists {a} → {b}, which no longer happens: delete the entry"
                 for a, b in known if (a, b) not in found]
    return problems


def test_shared_has_no_import_circle_and_no_upward_import():
    assert import_problems(import_graph(shared_modules()), KNOWN) == []


def test_a_circle_or_an_upward_import_is_caught():
    trees = shared_modules()

    def with_import(module: str, line: str) -> dict[str, set[str]]:
        edited = {**trees, module: ast.parse(line)}
        return import_graph(edited)

    # a circle: the bus's codec importing the client that imports it
    circle = import_problems(with_import("shared.bus.codec",
                                         "from shared.bus.client import BusClient"), KNOWN)
    assert "import circle: shared.bus.client → shared.bus.codec → shared.bus.client" in circle
    # the protocol reaching up to the bus (what CacheClient in shared.protocol.cache did)
    up = import_problems(with_import("shared.protocol.cache",
                                     "def f():\n    from shared.bus.client import BusClient"),
                         KNOWN)
    assert "shared.protocol.cache → shared.bus.client: layer shared.protocol imports the " \
           "higher layer shared.bus" in up
    # a lazy import under TYPE_CHECKING counts; shared importing a program's code is upward
    hidden = import_problems(with_import(
        "shared.market.bars", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from services.bot.service import BotService"), KNOWN)
    assert any(p.startswith("shared.market.bars → services:") for p in hidden)
    # a module no layer names, and a KNOWN entry that no longer happens
    stray = import_problems(import_graph({**trees, "elsewhere": ast.parse("")}), KNOWN)
    assert "elsewhere is in no layer of LAYERS" in stray
    stale = {**KNOWN, ("shared.logs", "shared.cli"): "never"}
    assert any("no longer happens" in p for p in import_problems(import_graph(trees), stale))


def test_the_circles_this_refactor_removed_stay_removed():
    """bus.client → protocol.tables → protocol.cache → bus.client; protocol.ops ↔
    protocol.common; resources.cgroup ↔ cgroup_v1/v2; market.importing → storage.bar_store."""
    graph = import_graph(shared_modules())
    assert not graph["shared.protocol.cache"] & {"shared.bus.client", "shared.bus.codec"}
    assert "shared.protocol.common" not in graph["shared.protocol.ops"]
    assert not graph["shared.resources.cgroup"] & {"shared.resources.cgroup_v1",
                                                   "shared.resources.cgroup_v2"}
    assert "shared.market.importing" not in graph
