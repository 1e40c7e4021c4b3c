"""The one SQLite helper both stores use: open with the pragmas on purpose, check integrity
before any write, checkpoint the WAL off the hot path, and keep the WAL bounded.

WAL mode (seed 000 §4.1): readers never block the writer. Auto-checkpoints are off (one would
stall whichever commit crosses the threshold); the owner checkpoints between bars. A reader
that holds an old snapshot (a long transaction, an operator's open `sqlite3` shell) stops a
checkpoint from reaching the WAL's end, and the WAL then grows with every commit: that is
logged, naming the file and the size, at most once a minute. ``journal_size_limit`` cuts a
WAL that a burst grew back to the limit when SQLite next resets it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("bdt.sqlite")

WAL_SIZE_LIMIT = 16 << 20       # a WAL is truncated back to this after a checkpoint resets it
WAL_WARN_BYTES = 64 << 20       # over this, a checkpoint that cannot finish is reported


def open_db(path: Path, *, synchronous: str, what: str, extra_pragmas: str = "",
            error: type[Exception] = RuntimeError) -> sqlite3.Connection:
    """Open (creating) the database at ``path`` in WAL mode with autocommit off-by-default
    (``isolation_level=None``: transactions are explicit), after ``PRAGMA quick_check``.
    ``error`` is raised, naming ``what`` and the file, when it is unusable; the file is left
    untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            conn.close()
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        conn.executescript(f"""
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = {synchronous};
            PRAGMA busy_timeout = 5000;
            PRAGMA wal_autocheckpoint = 0;
            PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};
            {extra_pragmas}""")
    except sqlite3.DatabaseError as exc:
        raise error(f"{what} {path} is unusable ({exc}); it was left untouched: restore it "
                    "from a backup or move it aside") from None
    return conn


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
