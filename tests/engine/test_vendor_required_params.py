"""Vendors refuse a search lacking the parameters they require for its type (vendors.md §2, §3): the REST sync and the
weekly reconciliation send them, against a sandbox that refuses a search without them (``required_search_params``)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connectors.fhir.resource_types import SYNCED_RESOURCE_TYPES
from connectors.providers import all_providers
from engine import reconcile_deletes
from tests.engine.helpers import connect_patient, make_environment
from tests.engine.job_runs import sync_type


def test_oracle_careplan_search_carries_category_assess_plan(
    tmp_path: Any, start_sandbox: Any, http: httpx.Client
) -> None:
    """Oracle Health's CarePlan search needs ``patient`` with ``category`` (only ``assess-plan``) or ``_id`` alone
    [doc]. Before, a Cerner connection searched ``CarePlan?patient=`` only: refused (400) on every run, so no care
    plan ever arrived, and the weekly id listing failed the same way."""
    sb = start_sandbox(patients=1)
    sb.admin.settings(required_search_params={"CarePlan": [["patient", "category"]]})
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_patient(world, sb, http=http, provider_id="cerner")
    first = sync_type(world, conn, "CarePlan")
    assert first.error is None and first.created > 0, first.error
    again = sync_type(world, conn, "CarePlan")  # incremental (_lastUpdated) keeps the category too
    assert again.error is None and again.created == 0, again.error
    assert reconcile_deletes(world.env, conn, "CarePlan").tombstoned == 0


def test_epic_observation_search_carries_a_category(tmp_path: Any, start_sandbox: Any, http: httpx.Client) -> None:
    """Epic's Observation search needs ``patient`` with ``category`` or ``code`` [doc]: over a real socket, every
    search of the sync and of the reconciliation's listing names a category (the sandbox refuses one without)."""
    sb = start_sandbox(patients=1)
    sb.admin.settings(required_search_params={"Observation": [["patient", "category"], ["patient", "code"]]})
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_patient(world, sb, http=http, provider_id="epic")
    report = sync_type(world, conn, "Observation")
    assert report.error is None and report.created > 0, report.error
    assert reconcile_deletes(world.env, conn, "Observation").tombstoned == 0


@pytest.mark.parametrize("provider", all_providers(), ids=lambda p: p.id)
def test_every_search_plan_meets_its_vendors_required_parameters(provider: Any) -> None:
    """Each plugin's patient search plans satisfy its own ``required_search_params`` for every synced type (a rule
    declared but not sent is the defect above)."""
    config = {"fhirBaseUrl": "https://ehr.example.org", "clientId": "c", "practiceId": "1"}
    for rtype in SYNCED_RESOURCE_TYPES:
        required = provider.required_search_params.get(rtype)
        plans = provider.search_plans(rtype, "p1", config=config if provider.id == "athena" else None)
        for plan in plans if required else ():
            assert any(set(names) <= set(plan) for names in required), (provider.id, rtype, plan)
