"""Content-addressed attachment store: ``{root}/sha256/ab/cd/<hash>``.

Storing by hash makes a re-download of the same document a no-op and lets many DocumentReferences share one
blob; ``put_file`` moves (never copies twice) so large attachments are never held in memory.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from warehouse._disk_full import disk_full_named, is_disk_full
from warehouse.errors import AttachmentError, AttachmentIntegrityError, InvalidInputError

__all__ = ["AttachmentRef", "AttachmentStore"]

logger = logging.getLogger(__name__)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class AttachmentRef:
    sha256: str
    size: int
    content_type: str
    path: Path


class AttachmentStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        """Where the blob with this (lower-case hex) sha256 lives, whether or not it is stored yet."""
        if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
            raise InvalidInputError("sha256 must be 64 lower-case hex characters")
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def contains(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_file(
        self,
        tmp_path: Path | str,
        content_type: str = "application/octet-stream",
        *,
        expected_sha256: str | None = None,
    ) -> AttachmentRef:
        """Hash ``tmp_path`` in chunks and move it into the store (idempotent: an existing blob is kept and the
        temp file removed). ``expected_sha256`` guards against a corrupted download."""
        src = Path(tmp_path)
        if not src.is_file():
            raise AttachmentError(f"attachment temp file {src} does not exist")
        digest = hashlib.sha256()
        size = 0
        with src.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        if expected_sha256 is not None and expected_sha256.lower() != sha:
            raise AttachmentIntegrityError(f"attachment {src.name} hashes to {sha}, expected {expected_sha256}")
        dest = self.path_for(sha)
        if dest.is_file():
            src.unlink()
            logger.debug("attachment %s already stored", sha)
            return AttachmentRef(sha, size, content_type, dest)
        with self._refused_for_room(sha):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                src.replace(dest)
            except OSError as exc:
                if is_disk_full(exc):  # the same disk, full: a copy would need more room still
                    raise
                self._copy_into_place(src, dest, sha)
        logger.info("stored attachment %s (%d bytes)", sha, size)
        return AttachmentRef(sha, size, content_type, dest)

    @staticmethod
    def _copy_into_place(src: Path, dest: Path, sha: str) -> None:
        """Different filesystem: copy beside the destination, then rename atomically."""
        staging = dest.with_name(f".{sha}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(src, staging)
            staging.replace(dest)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise
            raise AttachmentError(f"could not store attachment {sha}: {exc}") from exc
        src.unlink()

    @contextmanager
    def _refused_for_room(self, sha: str) -> Iterator[None]:
        """The store refusing a move, copy or folder for room (ENOSPC, EDQUOT) is ``LandingDiskFullError``, as a
        landing file's write is: the store shares the state directory's disk, and every later attachment (and
        landing) would meet it too, so the caller stops instead of fetching them."""
        with disk_full_named(
            lambda why: (
                f"the disk is full: could not store attachment {sha} under {self.root} ({why}); "
                "free space there and run again (nothing of it is kept, earlier attachments are untouched)"
            )
        ):
            yield
