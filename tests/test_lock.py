"""requirements.lock: exact versions with hashes for everything pyproject.toml asks for, and the
Makefile's uv bootstrap takes uv's own hashed entry from it (issue 19, item 5)."""

from __future__ import annotations

import re
import subprocess
import tomllib

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO

LOCK = (REPO / "requirements.lock").read_text()
# the environments the lock is made for ([tool.uv] environments): CPython 3.11 on Linux
ENVIRONMENTS = [{"python_version": "3.11", "python_full_version": v, "sys_platform": "linux",
                 "platform_machine": "x86_64", "implementation_name": "cpython"}
                for v in ("3.11.2", "3.11.7")]


def entries(text: str) -> list[tuple[Requirement, list[str]]]:
    """Each pin of a hashed requirements file with its hashes."""
    out = []
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        lines = [ln for ln in block.splitlines() if not ln.lstrip().startswith("#")]
        if lines and lines[0][:1].isalnum():
            out.append((Requirement(lines[0].rstrip(" \\")),
                        re.findall(r"--hash=(sha256:[0-9a-f]{64})", block)))
    return out


def test_every_pin_is_exact_and_hashed():
    pins = entries(LOCK)
    assert len(pins) > 50
    for req, hashes in pins:
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", req
        assert hashes, f"{req.name} has no hash"
    assert LOCK.splitlines()[1].strip() == "#    make lock"     # re-resolved by `make lock` only


def test_every_requirement_of_pyproject_is_pinned_for_each_environment():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                        for r in extra]
    assert {"uv", "pip", "setuptools"} <= {Requirement(r).name for r in wanted}
    for env in ENVIRONMENTS:
        pinned = {canonicalize_name(req.name): next(iter(req.specifier)).version
                  for req, _ in entries(LOCK) if req.marker is None or req.marker.evaluate(env)}
        for text in wanted:
            req = Requirement(text)
            assert canonicalize_name(req.name) in pinned, f"{req.name} is not in the lock"
            assert req.specifier.contains(pinned[canonicalize_name(req.name)]), (req, env)
    # the one pin that differs between 3.11.x releases (redis needs it before 3.11.3)
    assert Marker("python_full_version < '3.11.3'").evaluate(ENVIRONMENTS[0])
    assert any(req.name == "async-timeout" for req, _ in entries(LOCK))


def test_the_makefiles_uv_bootstrap_takes_uvs_hashed_entry_from_the_lock(tmp_path):
    recipe = next(ln for ln in (REPO / "Makefile").read_text().splitlines() if "awk" in ln)
    program = re.search(r"awk '(.*)' \$\(LOCK\)", recipe)[1].replace("$$", "$")
    taken = subprocess.run(["awk", program, str(REPO / "requirements.lock")], check=True,
                           capture_output=True, text=True).stdout
    (pin, hashes), = entries(taken)
    assert pin.name == "uv"
    assert hashes == dict((r.name, h) for r, h in entries(LOCK))["uv"]
