"""Synthetic data: valid R4 (checked with fhir.resources.R4B), deterministic, lazy, realistic volumes."""

from __future__ import annotations

import base64
import importlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from sandbox.clock import Clock
from sandbox.data.generator import Generator
from sandbox.data.ids import ALL_TYPES, parse_id
from sandbox.data.store import DataStore
from sandbox.data.timefmt import instant, parse_instant
from sandbox.errors import ResourceGone, ResourceNotFound


def _model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


@pytest.mark.parametrize("index", [0, 7, 123, 9_999])
def test_every_resource_of_a_patient_is_valid_r4(index: int) -> None:
    gen = Generator(seed=7, patients=10_000)
    resources = gen.patient_resources(index) + gen.shared_resources()
    for r in resources:
        _model(r["resourceType"]).model_validate(r)
        assert r["meta"]["versionId"] == "1"
        assert parse_instant(r["meta"]["lastUpdated"]) < datetime.now(UTC)
    assert {r["resourceType"] for r in resources} >= set(ALL_TYPES) - {"AllergyIntolerance", "Procedure"}


def test_generation_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    a = [orjson.dumps(r) for r in Generator(7, 50).patient_resources(42)]
    b = [orjson.dumps(r) for r in Generator(7, 50).patient_resources(42)]
    c = [orjson.dumps(r) for r in Generator(8, 50).patient_resources(42)]
    assert a == b
    assert a != c


def test_generating_one_type_does_not_change_another() -> None:
    gen = Generator(7, 10)
    all_obs = [r for r in gen.patient_resources(3) if r["resourceType"] == "Observation"]
    assert gen.patient_resources(3, ["Observation"]) == all_obs


def test_volumes_categories_and_references_are_realistic() -> None:
    gen = Generator(7, 200)
    counts: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    for i in range(200):
        for r in gen.patient_resources(i):
            counts[r["resourceType"]] += 1
            if r["resourceType"] == "Observation":
                cats[r["category"][0]["coding"][0]["code"]] += 1
    per_patient = sum(counts.values()) / 200
    assert 70 <= per_patient <= 160
    assert set(cats) == {"vital-signs", "laboratory", "social-history"}
    assert counts["Patient"] == 200
    assert counts["Binary"] == counts["DocumentReference"]


def test_document_attachments_point_to_binaries_of_matching_size_and_type() -> None:
    gen = Generator(7, 5)
    resources = gen.patient_resources(2)
    binaries = {r["id"]: r for r in resources if r["resourceType"] == "Binary"}
    types = set()
    for doc in (r for r in resources if r["resourceType"] == "DocumentReference"):
        att = doc["content"][0]["attachment"]
        binary = binaries[att["url"].split("/", 1)[1]]
        data = base64.b64decode(binary["data"])
        assert len(data) == att["size"]
        assert binary["contentType"] == att["contentType"]
        if att["contentType"] == "application/pdf":
            assert data.startswith(b"%PDF-1.4") and data.rstrip().endswith(b"%%EOF")
        types.add(att["contentType"])
    all_types = {r["contentType"] for i in range(5) for r in gen.patient_resources(i, ["Binary"])}
    assert all_types == {"text/plain", "application/pdf"}
    assert types <= all_types


def test_base_read_regenerates_only_the_owning_patient() -> None:
    gen = Generator(7, 10_000)
    obs = gen.patient_resources(9_876, ["Observation"])[5]
    assert gen.base_read("Observation", obs["id"]) == obs
    assert gen.base_read("Observation", "obs10000-0") is None  # beyond the patient count
    assert gen.base_read("Condition", obs["id"]) is None  # id prefix names another type
    assert gen.base_read("Patient", "nope") is None
    assert parse_id("Group", "grp1") == (True, 1)


def test_overlay_update_delete_create_bump_versions_with_server_clock() -> None:
    clock = Clock(shift_s=3600)
    store = DataStore(Generator(7, 5), clock)
    cond = store.patient_resources(1, ["Condition"])[0]
    updated = store.update({**cond, "note": [{"text": "amended"}]})
    assert updated["meta"]["versionId"] == "2"
    assert parse_instant(updated["meta"]["lastUpdated"]) > datetime.now(UTC)  # clock shifted an hour ahead
    assert store.read("Condition", cond["id"])["note"] == [{"text": "amended"}]
    assert store.patient_resources(1, ["Condition"])[0]["meta"]["versionId"] == "2"
    store.delete("Condition", cond["id"])
    with pytest.raises(ResourceGone):
        store.read("Condition", cond["id"])
    assert cond["id"] not in {r["id"] for r in store.patient_resources(1, ["Condition"])}
    created = store.create({"resourceType": "Condition", "subject": {"reference": "Patient/pat1"}})
    assert created["id"] in {r["id"] for r in store.patient_resources(1, ["Condition"])}
    with pytest.raises(ResourceNotFound):
        store.read("Condition", "new999")
    assert store.deleted_since(instant(0), ["Condition"], {1}) == [
        ("Condition", cond["id"], store.deleted_since(instant(0), ["Condition"], None)[0][2])
    ]
    assert store.deleted_since(instant(0), ["Condition"], {2}) == []
