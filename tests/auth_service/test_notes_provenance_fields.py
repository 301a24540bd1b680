"""DWB-83: ehrsync's own provenance record of a note holds ids and versions, never text: a source that is not a
FHIR relative reference (a type, then an id) or a prompt version with a space is refused naming the field, and the
record is part of the note its idempotency key stands for (another one under the same key is a conflict)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth_service.test_notes_api import PATH, _body, _world


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sourceResources", ["Condition/chest pain"]),  # words where the id goes
        ("sourceResources", ["chest pain since Monday/c1"]),  # words where the type goes
        ("sourceResources", ["encounter/enc-9"]),  # no resource type: types begin with a capital
        ("promptVersion", "soap v4"),
    ],
)
def test_dwb83_text_in_a_provenance_field_is_refused_naming_the_field(make_app, field: str, value: Any) -> None:
    handle, key, _, conn = _world(make_app)
    answer = handle.client.post(PATH, json=_body(conn, **{field: value}), headers={"X-API-Key": key})
    assert answer.status_code == 422 and answer.json()["error"] == "validation_error", answer.text
    named = {f["field"].split(".")[1] for f in answer.json()["fields"]}
    assert named == {field} and "Traceback" not in answer.text


def test_dwb83_other_source_resources_under_the_same_key_are_a_conflict_not_a_replay(make_app) -> None:
    handle, key, _, conn = _world(make_app)
    first = handle.client.post(PATH, json=_body(conn, sourceResources=["Encounter/enc-9"]), headers={"X-API-Key": key})
    assert first.status_code == 201, first.text
    other = _body(conn, sourceResources=["Encounter/enc-9", "Observation/obs-2"])
    changed = handle.client.post(PATH, json=other, headers={"X-API-Key": key})
    assert changed.status_code == 409 and changed.json()["error"] == "idempotency_conflict", changed.text
