"""Database files are declared once, in shared/storage/stores.py (what the protocol package
points to; docs/bus.md lists them): a ``.db`` file name anywhere in the programs' code, the
deploy's or the bench's names a declared store."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from shared.storage.stores import STORES
from tests.helpers import REPO

ROOTS = ("shared", "services", "scheduler", "deploy", "bench")
DB_NAME = re.compile(r"[\w./-]*\.db")


def named_databases(paths: list[Path], root: Path = REPO) -> dict[str, list[str]]:
    """Every ``.db`` file name in a string of ``paths``' code → where (file:line)."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and DB_NAME.fullmatch(node.value):
                where = f"{path.relative_to(root)}:{node.lineno}"
                found.setdefault(node.value, []).append(where)
    return found


def undeclared(found: dict[str, list[str]]) -> list[str]:
    names = {s.name for s in STORES} | {Path(s.name).name for s in STORES}
    return [f"{name} ({', '.join(where)}) is not a store of shared/storage/stores.py"
            for name, where in sorted(found.items()) if name not in names]


def code() -> list[Path]:
    return [p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))]


def test_every_database_file_named_in_code_is_a_declared_store():
    found = named_databases(code())
    assert undeclared(found) == []
    assert found, "no database file named at all: the check reads nothing"


def test_an_undeclared_database_file_is_caught(tmp_path: Path):
    (tmp_path / "rogue.py").write_text('DB = "jobs.db"\nORDERS = var / "data" / "orders.db"\n')
    assert undeclared(named_databases([tmp_path / "rogue.py"], tmp_path)) == [
        "orders.db (rogue.py:2) is not a store of shared/storage/stores.py"]
