"""Atomic file writes: every file brushwork writes appears whole at its path or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new, empty hidden file next to ``path`` (same folder, so renaming it is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def commit(tmp: Path, path: Path, mode: int = 0o644) -> None:
    """Flush ``tmp`` to disk and rename it to ``path``: a full disk fails here, not later."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing. On a clean exit it is synced
    and renamed to ``path``; on any error (or interruption) it is removed and ``path`` is left
    as it was."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            yield f
        commit(tmp, path, mode)
    except BaseException:
        discard(tmp)
        raise
