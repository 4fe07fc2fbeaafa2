"""Files the workbench keeps for the owner only, written so that a crash or a full disk leaves the
previous version whole: a temporary file beside the target, fsync, rename, fsync of the folder."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from workbench.errors import StorageError

PRIVATE_FILE = 0o600


def write_private(path: Path, text: str) -> None:
    """Replace `path` by `text` (mode 0600) all at once, or not at all (StorageError)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp makes it 0600
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise StorageError(path, exc) from exc
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut could otherwise undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # folders that cannot be synced: nothing to do
            raise
    finally:
        os.close(fd)


def make_private(path: Path) -> None:
    """Owner-only, for a file that may have been made readable by others (an older workbench did)."""
    try:
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_FILE)
    except OSError:
        pass  # not ours to change: the open that follows says what is wrong


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
