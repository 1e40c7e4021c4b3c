"""Unique cgroup trees for tests, and their removal even when a test fails."""

from __future__ import annotations

import os
import signal
import time
import uuid

from shared.resources.cgroup import NullBackend, open_backend


def unique_tree() -> str:
    return f"bdt-test-{uuid.uuid4().hex[:8]}"


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
        return
    roots = list(getattr(backend, "roots", {}).values()) or [getattr(backend, "root", None)]
    for _ in range(50):
        pids = set()
        for root in filter(None, roots):
            if root.is_dir():
                for procs in root.rglob("cgroup.procs"):
                    pids.update(int(p) for p in procs.read_text().split())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not pids and backend.remove_tree():
            return
        time.sleep(0.1)
    raise AssertionError(f"could not remove test cgroup tree {tree}")
