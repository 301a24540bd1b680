"""Another process refreshing a connection's grant past the refresh lock's 300 s (``RefreshLockTimeoutError``, SQLite
app databases) stops what would only wait those 300 s again, as a refused grant does: the CapabilityStatement read
(before, read as "no usable CapabilityStatement", vendor defaults used, and the type's search then waited again),
the reads of referenced types and the downloads of attachments (before, each type or attachment waited again)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine import attachments, references
from engine.attachments import AttachmentRef, store_attachments
from engine.environment import SyncEnvironment
from store import RefreshLockTimeoutError

_WAITED = RefreshLockTimeoutError("connection c1: another process has been refreshing its token for over 300s")


def _waited_out(*_: Any, **__: Any) -> Any:
    raise _WAITED


def test_the_capability_statement_read_stops_instead_of_falling_back_to_vendor_defaults() -> None:
    client = SimpleNamespace(capabilities=_waited_out)
    with pytest.raises(RefreshLockTimeoutError):
        SyncEnvironment._fetch_capabilities(SimpleNamespace(id="c1"), client)  # type: ignore[arg-type]


def test_reading_referenced_types_stops_at_the_first_type(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[str] = []

    def land(*args: Any, **_: Any) -> Any:
        tried.append(args[5])
        raise _WAITED

    monkeypatch.setattr(references, "land_by_ids", land)
    monkeypatch.setattr(references, "can_search_by_id", lambda *_: False)
    env = SimpleNamespace(capabilities=lambda *_: None, zone=None, db=None)
    by_type = {"Practitioner": ["p1"], "Organization": ["o1"], "Location": ["l1"]}
    with pytest.raises(RefreshLockTimeoutError):
        references._fetch_all(env, SimpleNamespace(id="c1"), None, None, "run", by_type)  # type: ignore[arg-type]
    assert tried == ["Practitioner"]


def test_storing_attachments_stops_at_the_first_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tried: list[str] = []

    def store_one(env: Any, conn: Any, client: Any, ref: AttachmentRef, tmp: Path) -> Any:
        tried.append(ref.resource_id)
        raise _WAITED

    monkeypatch.setattr(attachments, "_store_one", store_one)
    refs = [AttachmentRef("DocumentReference", f"d{n}", f"https://ehr.example/Binary/{n}", None, None) for n in (1, 2)]
    env = SimpleNamespace(zone=SimpleNamespace(root=tmp_path))
    with pytest.raises(RefreshLockTimeoutError):
        store_attachments(env, SimpleNamespace(id="c1"), None, refs)  # type: ignore[arg-type]
    assert tried == ["d1"]
