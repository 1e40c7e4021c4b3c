"""The one SQLite helper both stores use: open with the pragmas on purpose, check integrity
before any write, checkpoint the WAL off the hot path, and keep the WAL bounded.

Other processes read a store with its owner's reader (``Reader`` below): opened read-only,
never created, in one read transaction.

WAL mode (seed 000 §4.1): readers never block the writer. Auto-checkpoints are off (one would
stall whichever commit crosses the threshold); the owner checkpoints between bars. A reader
that holds an old snapshot (a long transaction, an operator's open `sqlite3` shell) stops a
checkpoint from reaching the WAL's end, and the WAL then grows with every commit: that is
logged, naming the file and the size, at most once a minute. ``journal_size_limit`` cuts a
WAL that a burst grew back to the limit when SQLite next resets it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

log = logging.getLogger("bdt.sqlite")

WAL_SIZE_LIMIT = 16 << 20       # a WAL is truncated back to this after a checkpoint resets it
WAL_WARN_BYTES = 64 << 20       # over this, a checkpoint that cannot finish is reported


CORRUPT_SUFFIX = ".corrupt-"      # a store moved aside: <name>.corrupt-<UTC time>
REPLACED_SUFFIX = ".replaced-"    # a file found where a store was deleted under its owner
MOVED_ASIDE: list[dict[str, str]] = []   # this process's stores moved aside, for its alerts


def move_aside(path: Path) -> Path:
    """Rename a corrupt database (and its -journal, -wal and -shm) to ``<name>.corrupt-<UTC
    time>`` beside it — never deleted: an operator may want what is in it. Returns the new
    path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{stamp}")
    for suffix in ("", "-journal", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, moved.with_name(moved.name + suffix))
    return moved


def open_db(path: Path, *, synchronous: str, what: str, extra_pragmas: str = "",
            error: type[Exception] = RuntimeError, derived: bool = False) -> sqlite3.Connection:
    """Open (creating) the database at ``path`` in WAL mode with autocommit off-by-default
    (``isolation_level=None``: transactions are explicit), after ``PRAGMA quick_check``.

    When it is unusable (not a database, failing the check): a ``derived`` store (rebuilt
    from config or other data) is moved aside (``move_aside``), logged in one line naming
    both paths, recorded in ``MOVED_ASIDE``, and made anew; any other store — one with
    history — raises ``error`` naming ``what``, the file and the way out, and is left
    untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _open(path, synchronous, extra_pragmas)
    except sqlite3.DatabaseError as exc:
        if not derived:
            raise error(f"{what} {path} is unusable ({exc}); it was left untouched: restore it "
                        f"from a backup, or move it aside (mv {path} {path}.corrupt) to start "
                        "an empty one") from None
        moved = move_aside(path)
        log.error("%s %s is unusable (%s): moved aside to %s and made anew (it is derived "
                  "data)", what, path, exc, moved)
        MOVED_ASIDE.append({"what": what, "path": str(path), "moved_to": str(moved),
                            "reason": str(exc)})
    try:
        return _open(path, synchronous, extra_pragmas)
    except sqlite3.DatabaseError as exc:
        raise error(f"{what} {path} cannot be made anew ({exc})") from None


def _open(path: Path, synchronous: str, extra_pragmas: str) -> sqlite3.Connection:
    conn = None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        conn.executescript(f"""
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = {synchronous};
            PRAGMA busy_timeout = 5000;
            PRAGMA wal_autocheckpoint = 0;
            PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};
            {extra_pragmas}""")
    except sqlite3.DatabaseError:
        if conn is not None:
            conn.close()
        raise
    return conn


def reopen_replaced(old: sqlite3.Connection, path: Path, *, synchronous: str, what: str,
                    extra_pragmas: str = "", error: type[Exception] = RuntimeError
                    ) -> tuple[sqlite3.Connection, str]:
    """The database at ``path`` was deleted or replaced under its running owner (its
    ``FileIdentity`` changed): write everything ``old`` (still open on the original inode)
    holds into a new file at ``path`` (SQLite's online backup) and open that, so nothing the
    owner committed, or commits next, is lost. A file found at ``path`` (a replacement) is
    kept beside it as ``<name>.replaced-<UTC time>``, with its -wal and -shm. Returns the new
    connection and one line saying what was done; ``old`` is closed."""
    old.execute("PRAGMA wal_checkpoint(TRUNCATE)")     # everything into the old inode
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = None
    for suffix in ("", "-wal", "-shm"):        # no stale WAL may meet the new file
        found = path.with_name(path.name + suffix)
        if found.exists():
            kept = kept or path.with_name(f"{path.name}{REPLACED_SUFFIX}{stamp}")
            os.replace(found, kept.with_name(kept.name + suffix))
    fresh = sqlite3.connect(path)
    try:
        old.backup(fresh)
    finally:
        fresh.close()
        old.close()
    note = (f"{what} {path} was deleted or replaced while in use: rewritten from the open "
            f"copy, nothing lost" + (f"; the file found there is kept as {kept}" if kept else ""))
    log.error("%s", note)
    return open_db(path, synchronous=synchronous, what=what, extra_pragmas=extra_pragmas,
                   error=error), note


def renew_if_replaced(conn: sqlite3.Connection, identity: FileIdentity, *, synchronous: str,
                      what: str, extra_pragmas: str = "", error: type[Exception] = RuntimeError
                      ) -> tuple[sqlite3.Connection, FileIdentity, str | None]:
    """(``conn``, ``identity``, None) while the file is the one opened; else
    ``reopen_replaced``'s new connection, the new file's identity and its note."""
    if not identity.replaced():
        return conn, identity, None
    conn, note = reopen_replaced(conn, identity.path, synchronous=synchronous, what=what,
                                 extra_pragmas=extra_pragmas, error=error)
    return conn, FileIdentity(identity.path), note


class FileIdentity:
    """Which file a path named when a store opened it (device and inode): ``replaced()`` is
    True once the file was deleted, or another file renamed over it, under the running
    service — SQLite would go on writing into the unlinked inode, and every later write would
    be lost when the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = self._key()

    def _key(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def replaced(self) -> bool:
        return self._key() != self.key


class Checkpointer:
    """Checkpoints one database's WAL and reports a reader that starves it."""

    def __init__(self, conn: sqlite3.Connection, path: Path, warn_bytes: int = WAL_WARN_BYTES,
                 warn_every_s: float = 60.0) -> None:
        self.conn, self.wal = conn, path.with_name(path.name + "-wal")
        self.warn_bytes, self.warn_every_s = warn_bytes, warn_every_s
        self._warned_at = -1e9
        self.starved = 0            # checkpoints that could not reach the WAL's end

    def wal_bytes(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> tuple[int, int]:
        """PASSIVE checkpoint (never waits for readers): (frames in the WAL, frames copied)."""
        _busy, frames, copied = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > copied >= 0:
            self.starved += 1
            size = self.wal_bytes()
            now = time.monotonic()
            if size > self.warn_bytes and now - self._warned_at > self.warn_every_s:
                self._warned_at = now
                log.warning("%s is %d MiB and growing: %d of %d WAL frames cannot be "
                            "checkpointed because a reader holds an old snapshot (a long "
                            "transaction or an open sqlite3 shell on the database?)",
                            self.wal, size >> 20, frames - copied, frames)
        return frames, copied


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """The database at ``path`` opened read-only (``mode=ro``: no write lock, no pragma
    written, no file created) in one read transaction: every query until the block ends sees
    the same snapshot while the writer goes on in WAL mode. The file must exist."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=2)
    try:
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()


class Reader:
    """A store read by another process: a subclass adds the store's queries (its owner's
    queries class, shared with the writer), and ``with Subclass.open(path) as store`` runs
    them on a ``read_only`` connection, ``store.db``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @classmethod
    @contextmanager
    def open(cls, path: Path) -> Iterator[Self]:
        with read_only(path) as db:
            yield cls(db)


def rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """A cursor's rows as dicts by column name."""
    cols = [c[0] for c in cursor.description]
    return [dict(zip(cols, row, strict=True)) for row in cursor.fetchall()]
