from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from shared.config import load_config
from tests.cgroup_helpers import remove_leftover_trees


def pytest_sessionstart(session: pytest.Session) -> None:
    """The cgroup trees an earlier suite made and could not remove (it was killed)."""
    removed = remove_leftover_trees()
    if removed:
        print(f"\nremoved test cgroup trees left by a killed suite: {', '.join(removed)}")


@pytest.fixture
def var_dir():
    """A short private var directory (ipc socket paths must stay under 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="bdt-"))
    (path / "run").mkdir(mode=0o700)
    (path / "log").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cfg(var_dir):
    return load_config({"BDT_VAR": str(var_dir)})
