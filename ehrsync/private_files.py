"""Writing a secret file of the state folder (``ehrsync.env`` with the vault key, the demo's signing key)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in a file that is mode 600 from its creation and whole or absent.

    The bytes go to a new private file beside it (``mkstemp``: mode 600 whatever the umask, never readable by others
    for a moment, as write-then-chmod would be), flushed to disk, then renamed over ``path`` in one step. A write
    that fails midway (a full disk, a quota, a killed process) leaves the old file as it was: ``ehrsync.env`` is the
    only copy of the vault key, and truncating it in place before such a failure lost every token sealed under it.
    An older file's looser mode goes with it: the file that replaces it is private."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
