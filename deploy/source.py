"""What is deployed: the files of a git checkout, and the release id that names them.

The id is the commit and a hash of ``requirements.lock`` (``<commit12>-<lock8>``): the same
commit with the same lock is the same release, so deploying it again changes nothing. A
working tree that differs from its commit is refused unless allowed; it then gets an id of its
own (``<commit12>-dirty<files8>-<lock8>``) so it can never pass for the commit.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path


class SourceError(RuntimeError):
    """The source cannot be deployed as it is (not a git checkout, uncommitted changes)."""


@dataclass(frozen=True)
class Source:
    root: Path
    commit: str
    files: tuple[str, ...]        # relative paths, as rsync's --files-from wants them
    lock_sha: str
    dirty_sha: str | None         # hash of the files when the tree differs from the commit

    @property
    def id(self) -> str:
        dirty = f"-dirty{self.dirty_sha[:8]}" if self.dirty_sha else ""
        return f"{self.commit[:12]}{dirty}-{self.lock_sha[:8]}"

    @property
    def lock(self) -> Path:
        return self.root / "requirements.lock"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SourceError(f"git {' '.join(args)} in {root}: {done.stderr.strip()}")
    return done.stdout


def files_hash(root: Path, files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return h.hexdigest()


def read_source(root: Path, allow_dirty: bool = False) -> Source:
    """The checkout at ``root``: its commit, its files (tracked and untracked-but-not-ignored,
    those that exist) and its release id."""
    root = root.resolve()
    commit = git(root, "rev-parse", "HEAD").strip()
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    files = tuple(sorted(f for f in set(listed.split("\0")) if f and (root / f).is_file()))
    if "requirements.lock" not in files:
        raise SourceError(f"{root}: no requirements.lock to build the wheelhouse from")
    changes = git(root, "status", "--porcelain").strip()
    if changes and not allow_dirty:
        shown = "\n  ".join(changes.splitlines()[:10])
        raise SourceError(f"{root} has uncommitted changes (deploy a commit, or allow a dirty "
                          f"tree with ALLOW_DIRTY=1 / --allow-dirty):\n  {shown}")
    lock_sha = hashlib.sha256((root / "requirements.lock").read_bytes()).hexdigest()
    return Source(root, commit, files, lock_sha, files_hash(root, files) if changes else None)
