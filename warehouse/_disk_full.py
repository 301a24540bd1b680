"""A full disk met by a warehouse write, told apart from every other failure: one rule for landing files and the
attachment store, which share the state directory's disk. (``connectors`` has its own copy for downloads: the
layers keep the two packages from importing each other.)"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from warehouse.errors import LandingDiskFullError

__all__ = ["disk_full_named", "is_disk_full"]

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # no space left; the user's quota there spent


def is_disk_full(exc: OSError) -> bool:
    """The write was refused for room (ENOSPC) or for the user's quota there (EDQUOT)."""
    return exc.errno in _DISK_FULL


@contextmanager
def disk_full_named(describe: Callable[[str], str]) -> Iterator[None]:
    """A full disk met in the block is a ``LandingDiskFullError`` whose message ``describe`` gives from the system's
    reason (``No space left on device``), naming what could not be written (the OS error names nothing), so the
    caller stops instead of sending every later write to the same disk; any other failure passes unchanged."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise LandingDiskFullError(describe(os.strerror(exc.errno or 0))) from exc
