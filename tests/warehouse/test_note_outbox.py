"""``draft_note_outbox`` on DuckDB and PostgreSQL: replaced whole in one transaction, metadata columns only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from warehouse import Warehouse
from warehouse.errors import InvalidInputError
from warehouse.note_outbox import read_note_outbox, replace_note_outbox

T0 = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def _row(note_id: str, state: str) -> dict[str, object]:
    return {
        "id": note_id, "tenant_id": "t1", "connection_id": "c1", "draft_id": f"d-{note_id}",
        "loinc_code": "11506-3", "content_type": "text/plain; charset=utf-8", "body_bytes": 120,
        "produced_by": "scribe v3", "doc_status": "preliminary", "state": state, "version": 3, "attempts": 1,
        "last_http_status": 201, "reason_code": None, "ehr_resource_id": "doc-1", "ehr_version_id": "1",
        "created_at": T0, "updated_at": T0,
    }  # fmt: skip


def test_the_table_holds_exactly_the_last_copy(wh: Warehouse) -> None:
    assert replace_note_outbox(wh, [_row("n1", "pending"), _row("n2", "blocked")]) == 2
    assert replace_note_outbox(wh, [_row("n1", "written")]) == 1
    [row] = read_note_outbox(wh)
    assert (row["id"], row["state"], row["body_bytes"], row["created_at"]) == ("n1", "written", 120, T0)
    assert replace_note_outbox(wh, []) == 0 and read_note_outbox(wh) == []


def test_a_row_with_the_note_text_is_refused(wh: Warehouse) -> None:
    with pytest.raises(InvalidInputError, match="body"):
        replace_note_outbox(wh, [{**_row("n1", "pending"), "body": "PHI"}])
