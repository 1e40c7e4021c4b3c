"""The keys programs share through the cache are declared once (shared/protocol/cache_keys.py):
no program spells a key out as a string, every module that names a key is declared its writer
or one of its readers, every declared writer and reader does name it, and every key has a
reader. CacheClient's methods are the cache's ops. Each check lists the disagreements, and
each is shown to catch an edit made in one place alone."""

from __future__ import annotations

import ast
import dataclasses
import functools
import re

from shared.bus.cache_client import CacheClient
from shared.config import load_config
from shared.protocol import cache, cache_keys
from shared.protocol.cache_keys import KEYS, OPERATOR, CacheKey
from shared.protocol.common import COMMON
from tests.helpers import REPO

CODE = ("shared", "services", "scheduler")       # what the programs run
DECLARATION = "shared.protocol.cache_keys"
KEY_LIKE = re.compile(r"[a-z][a-z_]*:[a-z][a-z_]*")


@functools.cache
def code_modules() -> dict[str, ast.Module]:
    """Every module the programs run, parsed, by dotted name."""
    out = {}
    for root in CODE:
        for path in sorted((REPO / root).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def declared_constants() -> dict[str, CacheKey]:
    """The declaration's constants: variable name → key."""
    return {n: v for n, v in vars(cache_keys).items() if isinstance(v, CacheKey)}


@functools.cache
def facts(tree: ast.Module) -> tuple[list[tuple[int, str]], set[str]]:
    """A module's string constants (line, text), and every identifier it uses: names,
    attributes and what it imports by name."""
    strings: list[tuple[int, str]] = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            found.update(a.name for a in node.names)
    return strings, found


def key_problems(trees: dict[str, ast.Module], constants: dict[str, CacheKey],
                 keys: dict[str, CacheKey], live_namespaces: list[str]) -> list[str]:
    """Disagreements between the cache-key declaration and the code that writes and reads."""
    problems = []
    namespaces = {k.namespace for k in keys.values()}
    for module, tree in trees.items():
        if module == DECLARATION:
            continue
        for line, text in facts(tree)[0]:
            if KEY_LIKE.fullmatch(text) or text in namespaces:
                problems.append(f"{module}:{line}: cache key {text!r} spelled out (declare it "
                                "in shared/protocol/cache_keys.py, use its constant)")
    used = {m: facts(t)[1] for m, t in trees.items() if m != DECLARATION}
    for var, key in constants.items():
        if keys.get(key.name) is not key:
            problems.append(f"{var} ({key.name}) is not in cache_keys.KEYS")
        naming = {m for m, names in used.items() if var in names}
        declared = {key.writer, *key.readers} - {OPERATOR}
        for module in sorted(naming - declared):
            problems.append(f"{module} names {key.name} but is not declared its writer or a "
                            "reader")
        for module in sorted(declared - naming):
            role = "writer" if module == key.writer else "reader"
            problems.append(f"{key.name}: its declared {role} {module} does not name it")
        if not key.readers:
            problems.append(f"{key.name}: no reader (cache_keys.OPERATOR when only a person "
                            "reads it)")
        if key.namespace not in live_namespaces:
            problems.append(f"{key.name}: namespace {key.namespace} is not in "
                            "cache.live_namespaces (dropped in critical mode)")
    return problems


def test_the_cache_keys_and_their_writers_and_readers_agree():
    cfg = load_config({})
    assert key_problems(code_modules(), declared_constants(), KEYS,
                        cfg.get("cache.live_namespaces")) == []
    for key in KEYS.values():       # a TTL is seconds or a config key that holds them
        ttl = cfg.get(key.ttl) if isinstance(key.ttl, str) else key.ttl
        assert isinstance(ttl, int | float) and ttl > 0, key


def test_a_key_edited_in_one_place_alone_is_caught():
    trees, constants = code_modules(), declared_constants()
    live = load_config({}).get("cache.live_namespaces")

    def problems(edited: dict[str, str] | None = None, keys=KEYS, consts=constants):
        changed = {**trees, **{m: ast.parse(src) for m, src in (edited or {}).items()}}
        return key_problems(changed, consts, keys, live)

    status = (REPO / "shared/cli/status.py").read_text()
    # a writer that spells out a new key
    assert any("'bot:orders' spelled out" in p for p in problems(
        {"services.bot.snapshot": "client.set('bot:orders', 1)"}))
    # a key built by hand from its namespace
    assert any("'monitor:' spelled out" in p for p in problems(
        {"services.monitor.snapshot": "key = f'{\"monitor:\"}sample'"}))
    # a reader that stopped reading a key it is declared to read
    assert any("declared reader shared.cli.status does not name it" in p for p in problems(
        {"shared.cli.status": status.replace("BOT_EQUITY", "BOT_RISK")}))
    # a module that reads a key without being declared a reader
    assert any("shared.cli.cache names bot:risk but is not declared" in p for p in problems(
        {"shared.cli.cache": "from shared.protocol.cache_keys import BOT_RISK"}))
    # a key declared with no reader, and one left out of KEYS
    lonely = dataclasses.replace(cache_keys.BOT_RISK, readers=())
    assert any("bot:risk: no reader" in p for p in problems(
        keys={**KEYS, "bot:risk": lonely}, consts={**constants, "BOT_RISK": lonely}))
    stray = CacheKey("bot:stray", "services.bot.service", 1.0, (OPERATOR,), "x")
    assert any("BOT_STRAY (bot:stray) is not in cache_keys.KEYS" in p for p in problems(
        consts={**constants, "BOT_STRAY": stray}))


def test_the_cache_client_has_one_method_per_cache_op():
    methods = {n for n in vars(CacheClient) if not n.startswith("_")} - {"close"}
    assert methods == {op.name for op in cache.OPS} - {op.name for op in COMMON}
