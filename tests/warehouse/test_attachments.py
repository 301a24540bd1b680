"""Content-addressed attachment store (DocumentReference / Binary content)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from warehouse import AttachmentError, AttachmentIntegrityError, AttachmentStore, InvalidInputError


def _tmp(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_put_file_moves_into_sha256_layout(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "att")
    data = b"%PDF-1.7 discharge summary" * 1000
    sha = hashlib.sha256(data).hexdigest()
    src = _tmp(tmp_path, "dl.tmp", data)
    ref = store.put_file(src, "application/pdf")
    assert (ref.sha256, ref.size, ref.content_type) == (sha, len(data), "application/pdf")
    assert ref.path == tmp_path / "att" / "sha256" / sha[:2] / sha[2:4] / sha
    assert ref.path.read_bytes() == data and not src.exists()
    assert store.path_for(sha) == ref.path and store.contains(sha)


def test_put_file_is_idempotent(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "att")
    first = store.put_file(_tmp(tmp_path, "a", b"same"))
    second_src = _tmp(tmp_path, "b", b"same")
    second = store.put_file(second_src)
    assert first == second and not second_src.exists()
    assert len([p for p in (tmp_path / "att").rglob("*") if p.is_file()]) == 1


def test_put_file_checks_expected_hash_and_keeps_nothing_bad(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "att")
    with pytest.raises(AttachmentIntegrityError):
        store.put_file(_tmp(tmp_path, "a", b"truncated"), expected_sha256="0" * 64)
    assert not (tmp_path / "att").exists()
    with pytest.raises(AttachmentError, match="does not exist"):
        store.put_file(tmp_path / "missing")


def test_path_for_rejects_non_hashes(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path)
    for bad in ("../../etc/passwd", "ABC", "g" * 64):
        with pytest.raises(InvalidInputError):
            store.path_for(bad)
    assert not store.contains("a" * 64)
