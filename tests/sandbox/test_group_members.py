"""Admin group-membership changes (used by the BDX-15 membership tests of the sync engine)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox import SandboxAdminError, SandboxConfig, SandboxServer
from tests.sandbox.helpers import backend_token, bearer, lines, run


@pytest.fixture
def small_sb() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig(patients=4, seed=3)) as server:
        yield server


def test_bdx15_admin_changes_group_members_seen_by_export_and_read(small_sb: SandboxServer) -> None:
    token = backend_token(small_sb)
    assert small_sb.admin.change_group_members("grp1", add=["pat1"], remove=["Patient/pat2"]) == ["pat0", "pat1"]
    manifest = run(small_sb, token, path="/Group/grp1/$export", _type="Patient")
    assert {p["id"] for p in lines(manifest["output"][0]["url"], token)} == {"pat0", "pat1"}
    group = httpx.get(small_sb.fhir_base + "/Group/grp1", headers=bearer(token)).json()
    assert [m["entity"]["reference"] for m in group["member"]] == ["Patient/pat0", "Patient/pat1"]
    assert group["quantity"] == 2 and group["meta"]["versionId"] == "2"


def test_bdx15_admin_rejects_unknown_group_or_patient(small_sb: SandboxServer) -> None:
    with pytest.raises(SandboxAdminError) as info:
        small_sb.admin.change_group_members("grp9", add=["pat1"])
    assert info.value.status == 404
    with pytest.raises(SandboxAdminError) as info:
        small_sb.admin.change_group_members("grp1", add=["pat99"])
    assert info.value.status == 422
