"""Unique cgroup trees for tests, and their removal even when a test fails — or when the whole
suite was killed before its cleanup ran: every tree is recorded in LEDGER with the pid of the
test process that made it until it is removed, and the next suite removes the trees of the
processes that are gone (``remove_leftover_trees``, at session start)."""

from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

from shared.resources.cgroup import NullBackend
from shared.resources.cgroup_open import open_backend

LEDGER = Path(tempfile.gettempdir()) / "bdt-test-cgroups"   # <tree name> → its maker's pid


def unique_tree() -> str:
    """A fresh tree name (``bdt-test-<hex>``), recorded in LEDGER until remove_tree."""
    name = f"bdt-test-{uuid.uuid4().hex[:8]}"
    LEDGER.mkdir(exist_ok=True)
    (LEDGER / name).write_text(f"{os.getpid()}\n")
    return name


def writable_backend(tree: str):
    """A backend for ``tree`` or None (with the reason) when cgroups cannot be written."""
    backend = open_backend(tree)
    if isinstance(backend, NullBackend):
        return None, backend.reason
    return backend, ""


def remove_tree(tree: str) -> None:
    """Kill what is left in the test's own tree (by PID), then remove every cgroup of it."""
    backend = open_backend(tree)
    if isinstance(backend, NullBackend):
        (LEDGER / tree).unlink(missing_ok=True)
        return
    roots = list(backend.tree_paths().values())
    for _ in range(50):
        pids = set()
        for root in roots:
            if root.is_dir():
                for procs in root.rglob("cgroup.procs"):
                    pids.update(int(p) for p in procs.read_text().split())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not pids and backend.remove_tree():
            (LEDGER / tree).unlink(missing_ok=True)
            return
        time.sleep(0.1)
    raise AssertionError(f"could not remove test cgroup tree {tree}")


def remove_leftover_trees() -> list[str]:
    """Remove the recorded trees whose maker is gone (a suite killed mid-test), with whatever
    still runs in them; the names removed. A tree of a live process (another suite running
    now) is left alone."""
    removed = []
    for record in sorted(LEDGER.glob("bdt-test-*")) if LEDGER.is_dir() else []:
        try:
            os.kill(int(record.read_text()), 0)
            continue                           # its maker still runs
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        remove_tree(record.name)
        removed.append(record.name)
    return removed


def require_writable_cgroups() -> None:
    """Skip the calling test unless this process may make cgroups (a probe tree is made and
    removed)."""
    import pytest

    probe = unique_tree()
    try:
        if writable_backend(probe)[0] is None:
            pytest.skip("cgroups not writable here")
    finally:
        remove_tree(probe)
