"""The job database as a file: made whole or not at all, checked before use, a damaged one moved
aside (never replaced), and copied while the service runs.

A zero-length file is what SQLite itself leaves when it opens a path that did not exist, so it
cannot tell "new" from "emptied": a new database is therefore built under a temporary name and
linked into place with its schema and a marker (`user_version`) already in it. From then on a
file at the path without our tables is damage, never a fresh start.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from workbench.files import PRIVATE_FILE, make_private, sync_folder

MARKER = 1  # PRAGMA user_version of a workbench database
SIDE_FILES = ("-wal", "-shm")
BROKEN = ".broken-"

log = logging.getLogger(__name__)


class DatabaseDamaged(RuntimeError):
    """The database cannot be used and could not be moved aside; the message says what to do."""


def create(path: Path, schema: str) -> None:
    """A new database at `path` with `schema` and the marker, or nothing if one appeared meanwhile."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
        db.execute(f"PRAGMA user_version={MARKER}")
    finally:
        db.close()
    try:
        os.link(tmp, path)  # unlike a rename, never replaces a database another process just made
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: rename, checking first (a narrow race)
        if not path.exists():
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)


def problem(path: Path) -> str | None:
    """Why the database at `path` cannot be used, or None when it is sound."""
    if path.stat().st_size == 0:
        return "it is empty (0 bytes): every job's history is gone from it"
    try:
        db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
        try:
            found = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
            if found != ["ok"]:
                return "its integrity check failed: " + "; ".join(found).replace("\n", "; ")
            marker = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"SQLite cannot read it ({exc})"
    if marker == MARKER and "jobs" not in tables:
        return "its tables are gone"
    if marker != MARKER and tables and "jobs" not in tables:
        return f"it is not a workbench database (tables: {', '.join(sorted(tables))})"
    return None


def check(path: Path) -> dict | None:
    """Before use: a damaged database is moved aside, told in the log, and described in the answer;
    a sound one (or none) answers None. DatabaseDamaged when it cannot even be moved."""
    if not path.exists() or not (reason := problem(path)):
        return None
    aside = move_aside(path, reason)
    log.error("%s cannot be used: %s. It was moved to %s (kept) and a new, empty database started. "
              "To get the history back, stop the service and restore a backup to %s.",
              path, reason, aside, path)
    return {"file": str(path), "moved_to": str(aside), "reason": reason}


def move_aside(path: Path, reason: str) -> Path:
    """Rename a damaged database (and its WAL) to `<name>.broken-<UTC time>`, kept for recovery."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}{BROKEN}{stamp}")
    try:
        for suffix in ("", *SIDE_FILES):
            source = Path(f"{path}{suffix}")
            if source.exists():
                os.rename(source, f"{aside}{suffix}")
    except OSError as exc:
        raise DatabaseDamaged(
            f"{path} cannot be used: {reason}. Moving it aside failed ({exc.strerror}): move it away "
            f"yourself (keep it), or restore a backup to that path (python -m workbench backup makes "
            "them), then start again.") from None
    sync_folder(path.parent)
    return aside


def damaged_copies(home: Path, name: str = "workbench.db") -> list[Path]:
    """Databases moved aside, still in the home folder until someone deals with them."""
    return sorted(p for p in home.glob(f"{name}{BROKEN}*") if not p.name.endswith(SIDE_FILES))


def backup(source: Path, dest: Path) -> dict:
    """A consistent copy of a database in use (SQLite's online backup), checked, written atomically."""
    dest = dest.expanduser().resolve()
    if dest.is_dir():
        dest = dest / f"{source.stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.db"
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE))
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        copy = sqlite3.connect(tmp)
        try:
            src.backup(copy)  # one step: a snapshot, while workers go on writing
            copy.execute("PRAGMA journal_mode=DELETE")  # a backup is one self-contained file
            check = copy.execute("PRAGMA quick_check").fetchone()[0]
            jobs = copy.execute("SELECT count(*) FROM jobs").fetchone()[0]
        finally:
            copy.close()
            src.close()
        if check != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {check}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    make_private(dest)
    return {"path": str(dest), "bytes": dest.stat().st_size, "jobs": jobs}
