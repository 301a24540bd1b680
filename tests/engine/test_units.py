"""Pure functions of the sync engine: reference and attachment extraction, allow-lists, deleted-entry parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from engine.attachments import absolute_url, attachment_refs, content_type_allowed
from engine.bulk_special import deleted_ref as _deleted_ref
from engine.connection_info import ConnectionInfo
from engine.environment import DEFAULT_ATTACHMENT_TYPES
from engine.incremental import search_plans
from engine.references import collect_references
from engine.reports import TypeReport
from engine.search_recovery import format_instant

BASE = "https://ehr.example.org/fhir"


def test_collect_references_same_server_only_and_deduplicated():
    resource = {
        "resourceType": "Encounter",
        "id": "e1",
        "participant": [
            {"individual": {"reference": "Practitioner/p1"}},
            {"individual": {"reference": f"{BASE}/Practitioner/p1/_history/3"}},
            {"individual": {"reference": "https://other.example.com/fhir/Practitioner/evil"}},
        ],
        "serviceProvider": {"reference": "Organization/o-1"},
        "location": [{"location": {"reference": "Location/l.2"}}],
        "subject": {"reference": "Patient/123"},
        "contained": [{"resourceType": "Medication", "id": "m"}],
        "medicationReference": {"reference": "#m"},
        "basedOn": [{"reference": "urn:uuid:0b1c"}],
    }
    found: set[str] = set()
    collect_references(resource, BASE + "/", found)
    assert found == {"Practitioner/p1", "Organization/o-1", "Location/l.2"}


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (
            {
                "resourceType": "DocumentReference",
                "id": "d1",
                "content": [
                    {"attachment": {"url": "Binary/b1", "contentType": "application/pdf", "size": 10}},
                    {"attachment": {"data": "aGVsbG8=", "contentType": "text/plain"}},
                ],
            },
            [("DocumentReference", "d1", "Binary/b1", "application/pdf", 10)],
        ),
        (
            {
                "resourceType": "DiagnosticReport",
                "id": "r1",
                "presentedForm": [{"url": "https://files.example.org/x.pdf"}],
            },
            [("DiagnosticReport", "r1", "https://files.example.org/x.pdf", None, None)],
        ),
        ({"resourceType": "Observation", "id": "o1", "presentedForm": [{"url": "Binary/x"}]}, []),
        ({"resourceType": "DocumentReference", "content": [{"attachment": {"url": "Binary/x"}}]}, []),
    ],
)
def test_attachment_refs(resource, expected):
    got = [(r.resource_type, r.resource_id, r.url, r.content_type, r.size) for r in attachment_refs(resource)]
    assert got == expected


@pytest.mark.parametrize(
    ("ctype", "ok"),
    [
        ("application/pdf", True),
        ("text/plain; charset=utf-8", True),
        ("IMAGE/PNG", True),
        ("application/xml", True),
        ("application/json", True),
        ("application/x-msdownload", False),
        ("application/octet-stream", False),
        ("textual/plain", False),
        (None, False),
        ("", False),
    ],
)
def test_content_type_allow_list(ctype, ok):
    assert content_type_allowed(ctype, DEFAULT_ATTACHMENT_TYPES) is ok


def test_absolute_url_relative_and_absolute():
    assert absolute_url(BASE, "Binary/1") == f"{BASE}/Binary/1"
    assert absolute_url(BASE + "/", "Binary/1") == f"{BASE}/Binary/1"
    assert absolute_url(BASE, "https://cdn.example.org/a.pdf") == "https://cdn.example.org/a.pdf"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient/123", ("Patient", "123")),
        ("https://ehr.example.org/fhir/Observation/o-9", ("Observation", "o-9")),
        ("Observation/o-9/_history/4", ("Observation", "o-9")),
        ("Observation?identifier=x", None),
        ("o-9", None),
        (None, None),
    ],
)
def test_deleted_entry_reference_bdx21(url, expected):
    """BDX-21: request.url of a DELETE entry is Type/id (relative or absolute)."""
    assert _deleted_ref(url) == expected


def test_format_instant_is_utc_z():
    shifted = datetime(2026, 1, 2, 5, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert format_instant(shifted) == "2026-01-02T03:04:05.123Z"


def test_type_report_absorb_and_metadata():
    mark = datetime(2026, 1, 1, tzinfo=UTC)
    a = TypeReport("Observation", fetched=3, bytes=10, pages=1)
    a.absorb(TypeReport("Observation", created=2, unchanged=1, high_water_mark=mark, duration_s=0.5))
    meta = a.as_metadata()
    assert (meta["fetched"], meta["created"], meta["unchanged"], meta["bytes"]) == (3, 2, 1, 10)
    assert meta["high_water_mark"] == "2026-01-01T00:00:00+00:00"
    assert "error" not in meta and "skipped_reason" not in meta
    assert a.ok


def _conn(provider_id: str, config: dict[str, Any] | None = None) -> ConnectionInfo:
    return ConnectionInfo(
        id="c1",
        tenant_id="t1",
        provider_id=provider_id,
        kind="patient",
        fhir_base=BASE,
        status="active",
        patient_id="p1",
        group_id=None,
        granted_scopes=None,
        provider_config=config,
    )


def test_search_plans_follow_vendor_quirks():
    since = datetime(2026, 1, 1, tzinfo=UTC)
    generic = search_plans(_conn("generic"), "Condition", since, 200, capabilities=None)
    assert generic == [{"patient": "p1", "_count": "200"}]  # generic declares no _lastUpdated without a capability
    caps = {"rest": [{"mode": "server", "searchParam": [{"name": "_lastUpdated"}]}]}
    generic = search_plans(_conn("generic"), "Patient", since, 50, capabilities=caps)
    assert generic == [{"_id": "p1", "_count": "50", "_lastUpdated": "gt2026-01-01T00:00:00.000Z"}]
    epic = search_plans(_conn("epic"), "Observation", None, 200)
    assert len(epic) > 1 and {p["category"] for p in epic} >= {"laboratory", "vital-signs"}
    athena = search_plans(
        _conn("athena", {"clientId": "app", "practiceId": "195900"}),
        "Condition",
        None,
        200,
    )
    assert athena[0]["patient"] == "p1" and "195900" in athena[0]["ah-practice"]
