"""``/admin/mutate`` limited to some patients: the demo changes only the records of connected patients."""

from __future__ import annotations

import re

import pytest

from sandbox import SandboxAdminError


def test_mutate_only_touches_the_named_patients(sandbox) -> None:
    changed = sandbox.admin.mutate(create=3, update=4, delete=2, seed=11, patients=["pat3", "pat4"])
    assert len(changed["created"]) == 3 and len(changed["updated"]) == 4 and len(changed["deleted"]) == 2
    state = sandbox.state
    for ref in changed["created"] + changed["updated"]:
        rtype, rid = ref.split("/")
        resource = state.store.read(rtype, rid)
        subject = (resource.get("subject") or resource.get("patient") or {}).get("reference")
        assert subject in ("Patient/pat3", "Patient/pat4"), ref
    for ref in changed["deleted"]:
        match = re.fullmatch(r"[a-z]+(\d+)-\d+", ref.split("/")[1])
        assert match is not None and match.group(1) in ("3", "4"), ref


def test_mutate_rejects_an_unknown_patient(sandbox) -> None:
    with pytest.raises(SandboxAdminError) as info:
        sandbox.admin.mutate(update=1, patients=["nobody"])
    assert info.value.status == 422
    assert "nobody" in str(info.value.detail)
