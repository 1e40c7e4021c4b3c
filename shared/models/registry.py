"""Versioned models on disk, and which one is live.

    root/versions/<version>/   lgbm.txt ridge.json garch.json features.json metadata.json
    root/CURRENT               the live version's name

A version directory is written under a temporary name and renamed into place, so it is
complete or absent. Promotion replaces CURRENT atomically (write CURRENT.tmp, fsync,
os.replace, fsync the directory): after a crash CURRENT names the old version or the new one,
never a mix; a leftover CURRENT.tmp is ignored. Every artifact's sha256 is in metadata.json
and is checked before a model is loaded, so a corrupt file is named rather than half-used.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.models.artifacts import ARTIFACTS, ModelError
from shared.models.finite import finite_json

if TYPE_CHECKING:
    from shared.models.model_set import ModelSet

METADATA_FILE = "metadata.json"
PROMOTIONS_FILE = "promotions.jsonl"      # every promotion and rollback
GATE_FILE = "gate.jsonl"                  # every promotion-gate decision, promoted or not
_VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_LIBRARIES = ("lightgbm", "scikit-learn", "arch", "numpy", "polars")


@dataclass
class LoadedModel:
    version: str
    model_set: ModelSet
    metadata: dict[str, Any]


def new_version(now: datetime | None = None) -> str:
    """'20261122T031500Z-a1b2c3': sorts by creation time; the suffix keeps it unique."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's data and entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.pointer = self.root / "CURRENT"
        self._pointer_seen: tuple[tuple[int, int, int], str | None] | None = None

    def register(self, model_set: ModelSet, metadata: dict[str, Any]) -> str:
        """Store ``model_set`` as a new version (not yet live); returns its name.
        ``metadata`` (training window, metrics, ...) is kept as given, plus what the
        registry adds: version, created_at, features, horizon, libraries, sha256s. A value
        that is not a finite number is stored as null with a ``<name>_why`` beside it
        (``shared.models.finite``): metadata.json is always strict JSON."""
        now = datetime.now(UTC)
        version = new_version(now)
        tmp = self.versions_dir / f".tmp-{version}"
        tmp.mkdir()
        try:
            model_set.save(tmp)
            meta = finite_json({
                **metadata,
                "version": version,
                "created_at": now.isoformat(timespec="seconds"),
                "features": list(model_set.features),
                "horizon": model_set.horizon,
                "libraries": library_versions(),
                "sha256": {name: sha256_file(tmp / name) for name in ARTIFACTS},
            })
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n")
            for name in (*ARTIFACTS, METADATA_FILE):
                _fsync(tmp / name)
            _fsync(tmp)
            os.rename(tmp, self.versions_dir / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync(self.versions_dir)
        return version

    def versions(self) -> list[str]:
        """Complete versions, oldest first (temporary directories are skipped)."""
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if p.is_dir() and _VERSION.match(p.name))

    def current(self) -> str | None:
        """What CURRENT names, or None if nothing was promoted yet. Not validated here (a
        service polls this): load() reports a pointer to a missing or bogus version.
        The file is read again only when its inode, mtime or size changed (a promotion
        renames a new file into place), so the bot asks on every bar for the price of a stat."""
        try:
            st = os.stat(self.pointer)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._pointer_seen is None or self._pointer_seen[0] != key:
                self._pointer_seen = (key, self.pointer.read_text().strip() or None)
        except FileNotFoundError:
            self._pointer_seen = None
            return None
        return self._pointer_seen[1]

    def promote(self, version: str, reason: str = "promoted") -> None:
        """Make ``version`` live: verified first, then an atomic swap of CURRENT; the change is
        appended to promotions.jsonl (what ``rollback`` goes back along)."""
        self.verify(version)
        previous = self.current()
        tmp = self.root / "CURRENT.tmp"
        with tmp.open("w") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.pointer)
        _fsync(self.root)
        self.log_event(PROMOTIONS_FILE, {"version": version, "previous": previous,
                                         "reason": reason})

    def log_event(self, name: str, record: dict[str, Any]) -> None:
        """Append one JSON line (with its UTC time) to ``name`` in the registry: the audit
        logs of promotions and of gate decisions. Non-finite numbers are nulled as in
        ``register``, so every line is strict JSON."""
        line = json.dumps(finite_json({"at": datetime.now(UTC).isoformat(timespec="seconds"),
                                       **record}), default=str, allow_nan=False)
        with (self.root / name).open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_log(self, name: str) -> list[dict[str, Any]]:
        """An audit log's records, oldest first (a torn last line is skipped)."""
        path = self.root / name
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def rollback(self) -> str:
        """Back to the version promoted before the current one; its name. ModelError when
        there is none to go back to."""
        current = self.current()
        previous = next((e.get("previous") for e in reversed(self.read_log(PROMOTIONS_FILE))
                         if e.get("version") == current), None)
        if not previous:
            raise ModelError(self.root / PROMOTIONS_FILE, f"no version was promoted before "
                                                           f"{current}: nothing to roll back to")
        self.promote(previous, reason=f"rollback from {current}")
        return previous

    def metadata(self, version: str) -> dict[str, Any]:
        """A version's metadata.json (not verified)."""
        path = self.versions_dir / version / METADATA_FILE
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(path, f"unreadable metadata: {exc}") from None

    def catalogue(self) -> list[dict[str, Any]]:
        """Every version, newest first: its name (``version``), whether it is the promoted one
        (``current``) and its ``metadata`` (``{"error": …}`` when unreadable) — no model is
        loaded, nothing verified."""
        current = self.current()
        out = []
        for version in reversed(self.versions()):
            try:
                meta = self.metadata(version)
            except ModelError as exc:
                meta = {"error": str(exc)}
            out.append({"version": version, "current": version == current, "metadata": meta})
        return out

    def verify(self, version: str) -> dict[str, Any]:
        """Check that ``version`` exists and every artifact matches its sha256; its metadata."""
        directory = self.versions_dir / version
        if not _VERSION.match(version) or not directory.is_dir():
            raise ModelError(directory, f"version {version!r} does not exist in {self.root}")
        path = directory / METADATA_FILE
        try:
            meta = json.loads(path.read_text())
            sums = meta["sha256"]
        except FileNotFoundError:
            raise ModelError(path, f"version {version}: {METADATA_FILE} is missing") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(path, f"version {version}: unreadable metadata: {exc!r}") from None
        for name in ARTIFACTS:
            artifact = directory / name
            if name not in sums:
                raise ModelError(artifact, f"version {version}: no sha256 recorded for {name}")
            if not artifact.is_file():
                raise ModelError(artifact, f"version {version}: {name} is missing")
            if sha256_file(artifact) != sums[name]:
                raise ModelError(artifact, f"version {version}: {name} is corrupt "
                                           "(sha256 differs from metadata)")
        return meta

    def load(self, version: str | None = None) -> LoadedModel:
        """Load ``version`` (default: CURRENT) after verifying its checksums."""
        if version is None:
            version = self.current()
            if version is None:
                raise ModelError(self.pointer, "no version promoted yet")
            if not _VERSION.match(version) or not (self.versions_dir / version).is_dir():
                raise ModelError(self.pointer, f"names version {version[:80]!r}, which does not "
                                               f"exist in {self.versions_dir}")
        meta = self.verify(version)
        from shared.models.model_set import ModelSet

        return LoadedModel(version, ModelSet.load(self.versions_dir / version), meta)


def read_catalogue(root: Path) -> list[dict[str, Any]]:
    """``ModelRegistry.catalogue`` of the registry at ``root``, read by another process (the
    dashboard): [] where there is none yet — opening a registry creates its folder, so it is
    opened only where it exists."""
    if not (Path(root) / "versions").is_dir():
        return []
    return ModelRegistry(root).catalogue()


class LazyModel:
    """The live model, loaded on first use and droppable to give memory back."""

    def __init__(self, registry: ModelRegistry, version: str | None = None) -> None:
        self.registry, self._pinned = registry, version
        self._loaded: LoadedModel | None = None

    @property
    def version(self) -> str | None:
        """The loaded version, or None when nothing is loaded."""
        return self._loaded.version if self._loaded else None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def get(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = self.registry.load(self._pinned)
        return self._loaded

    def unload(self) -> None:
        self._loaded = None
        gc.collect()
