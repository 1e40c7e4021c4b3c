"""The wheelhouse: every wheel of ``requirements.lock``, built here (the target cannot reach the
package registries, and should run exactly what CI tested), cached between deploys.

Cached in ``$BDT_WHEELHOUSE_CACHE`` (default ``~/.cache/bitdaytrader/wheelhouse``) under the
lock's hash, this interpreter's tag and the machine: ``<lock16>-cp311-x86_64/``. Built with
``pip wheel -r requirements.lock``, which verifies every download against the lock's hashes (a
package published only as an sdist — cgroupspy — is verified, then becomes a wheel here),
plus pip's own wheel, which builds the target's venv without the target needing pip.

``resolve`` picks, here, the wheels the project needs (its dependencies and extras from
pyproject.toml, at the lock's versions): only those are sent, and the target installs exactly
those files with ``--no-deps`` — no resolution on a small machine (~40 s of the VM's emulated
CPU) — then ``uv pip check`` there tells whether anything is missing. The
lock covers every CPython 3.11 on Linux, with environment markers; the wheelhouse holds every
pin whatever its marker, and ``resolve`` reads the markers for the target's Python.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
MANYLINUX_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
MANYLINUX_RE = re.compile(r"manylinux_(\d+)_(\d+)_")


class WheelhouseError(RuntimeError):
    """pip could not build, download or resolve a wheel."""


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def python_version() -> str:
    """The X.Y the wheelhouse is for (its cpXY wheels)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def cache_root() -> Path:
    if os.environ.get("BDT_WHEELHOUSE_CACHE"):
        return Path(os.environ["BDT_WHEELHOUSE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "bitdaytrader" / "wheelhouse"


def pip_version() -> str:
    """This venv's pip, which the target's venv gets too. Asked when a wheelhouse is built,
    not at import: a deploying venv without pip reaches the pre-flight's clear finding."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pip")
    except PackageNotFoundError:
        raise SystemExit("deploy: this venv has no pip, which builds the release's wheelhouse "
                         "(make install puts it there)") from None


@dataclass(frozen=True)
class Wheelhouse:
    path: Path

    @property
    def wheels(self) -> list[Path]:
        return sorted(self.path.glob("*.whl"))

    @property
    def pip_wheel(self) -> str:
        return f"pip-{pip_version()}-py3-none-any.whl"

    def size(self, names: list[str]) -> int:
        return sum((self.path / n).stat().st_size for n in names)

    def glibc_needed(self, names: list[str]) -> tuple[int, int] | None:
        """The newest glibc one of these wheels needs (a wheel with several manylinux tags
        needs the oldest of them), or None when every wheel is pure or not for Linux."""
        needed = None
        for wheel in map(Path, names):
            platforms = wheel.name[:-4].split("-")[-1].split(".")
            versions = [MANYLINUX_LEGACY[p.split("_")[0]] for p in platforms
                        if p.split("_")[0] in MANYLINUX_LEGACY]
            versions += [(int(m[1]), int(m[2])) for p in platforms
                         if (m := MANYLINUX_RE.match(p + "_"))]
            if versions:
                needed = max(needed or (0, 0), min(versions))
        return needed


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run([*PIP, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise WheelhouseError(f"pip {' '.join(args[:3])}…: {done.stderr.strip()[-2000:]}")


def ensure(lock: Path, lock_sha: str, log=print) -> Wheelhouse:
    """The wheelhouse of ``lock``, from the cache or built now (into a temporary directory,
    renamed when complete: an interrupted build is never taken for a cached one)."""
    path = cache_root() / f"{lock_sha[:16]}-{python_tag()}-{platform.machine()}"
    if path.is_dir():
        return Wheelhouse(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"building the wheelhouse from {lock.name} in {path} (pip wheel; once per lock)")
    try:
        every = tmp / "every-pin.txt"        # the markers dropped: wheels for any 3.11.x target
        every.write_text(every_pin(lock.read_text()))
        pip("wheel", "-r", str(every), "-w", str(tmp))
        every.unlink()
        pip("download", "--no-deps", f"pip=={pip_version()}", "-d", str(tmp))
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Wheelhouse(path)


def every_pin(lock_text: str) -> str:
    """The lock with its environment markers dropped, hashes kept: every pin, whatever Python
    3.11.x it is for. Raises WheelhouseError when a package is pinned twice (a lock split by
    markers into two versions cannot be one wheelhouse)."""
    text = re.sub(r" ;[^\\\n]*", " ", lock_text)
    names = [line.split("==")[0].lower() for line in text.splitlines() if line[:1].isalnum()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise WheelhouseError(f"requirements.lock pins {', '.join(twice)} more than once "
                              "(by environment marker): one wheelhouse cannot hold both")
    return text


def lock_pins(lock_text: str) -> str:
    """The lock's ``name==version ; marker`` lines without their hashes: as constraints (pip
    takes a file with hashes as requirements to verify, not as constraints to resolve within;
    the wheelhouse's files were verified against the hashes when it was built)."""
    return "".join(line.rstrip(" \\") + "\n" for line in lock_text.splitlines()
                   if line[:1].isalnum())


def resolve(wheelhouse: Wheelhouse, root: Path, extras: str = "",
            python: str | None = None) -> list[str]:
    """The wheel files (names in the wheelhouse) that the project at ``root`` needs with
    ``extras``, at the versions of its lock, plus uv, pip and setuptools (which install the
    venv and build the editable install on the target). Resolved from the wheelhouse alone
    (no index, no configuration). With uv (in the lock, so in any venv ``make install`` built),
    the lock's environment markers are read for ``python`` (X.Y.Z), the target's Python:
    ``async-timeout ; python_full_version < '3.11.3'`` is needed on Debian 12's 3.11.2 (a
    target of another X.Y is resolved for this Python: the pre-flight refuses it). pip,
    the fallback, reads them for this Python (``uv pip check`` on the target
    then names what is missing).

    Raises WheelhouseError when the wheelhouse cannot satisfy the project."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = list(project.get("dependencies", []))
    for extra in filter(None, extras.split(",")):
        wanted += project.get("optional-dependencies", {}).get(extra.strip(), [])
    wanted += ["pip", "setuptools", "uv"]
    uv = Path(sys.executable).with_name("uv")
    if python is None or python.rsplit(".", 1)[0] != python_version():
        python = platform.python_version()  # another X.Y: the pre-flight refuses it, saying so
    with tempfile.TemporaryDirectory() as tmp:
        pins, wants = Path(tmp) / "pins.txt", Path(tmp) / "wanted.in"
        pins.write_text(lock_pins((root / "requirements.lock").read_text()))
        if uv.exists():
            wants.write_text("\n".join(wanted) + "\n")
            done = subprocess.run(
                [uv, "pip", "compile", "-q", "--offline", "--no-cache", "--no-config",
                 "--no-index", "--find-links", wheelhouse.path, "-c", pins, wants,
                 "--python", sys.executable, "--python-version", python,
                 "--no-header", "--no-annotate"], capture_output=True, text=True)
            if done.returncode != 0:
                raise WheelhouseError(f"uv pip compile: {done.stderr.strip()[-2000:]}")
            return sorted(wheel_files(wheelhouse, done.stdout))
        report = Path(tmp) / "report.json"
        pip("install", "--dry-run", "--ignore-installed", "--report", str(report),
            "--no-index", "--find-links", str(wheelhouse.path), "-c", str(pins), *wanted,
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
        urls = [item["download_info"]["url"] for item in json.loads(report.read_text())["install"]]
    names = [url.rsplit("/", 1)[-1] for url in urls]
    outside = [n for n in names if not (wheelhouse.path / n).exists()]
    if outside:
        raise WheelhouseError(f"resolved outside the wheelhouse: {', '.join(outside)}")
    return sorted(names)


def wheel_files(wheelhouse: Wheelhouse, pinned: str) -> list[str]:
    """The wheelhouse's file for each ``name==version`` line of ``pinned``.

    Raises WheelhouseError naming a pin the wheelhouse has no wheel for."""
    files = {}
    for wheel in wheelhouse.wheels:
        name, version, _, _ = parse_wheel_filename(wheel.name)
        files[(name, str(version))] = wheel.name
    names, missing = [], []
    for line in pinned.splitlines():
        if "==" in line:
            name, version = line.split(";")[0].strip().split("==")
            key = (canonicalize_name(name), str(Version(version)))
            (names.append(files[key]) if key in files else missing.append(line.strip()))
    if missing:
        raise WheelhouseError(f"no wheel in {wheelhouse.path} for: {', '.join(missing)}")
    return names
