"""A tenant's stored settings that are not a JSON object are named once as the tenant's, by every reader that
prefixes "the tenant's" (the engine's Bulk refusal, the auth service's switch read)."""

from __future__ import annotations

from connectors.tenant_switches import TenantSwitch, read_switch, stored_problems


def test_settings_that_are_no_object_read_as_the_tenants_settings_once() -> None:
    problem = read_switch(["not", "an", "object"], "enableBulkExport").problem
    assert problem == "settings must be an object, got an array"
    assert f"the tenant's {problem}" == "the tenant's settings must be an object, got an array"
    assert stored_problems("text") == ["settings must be an object, got a string"]


def test_practice_settings_that_are_a_falsy_non_object_are_named_not_read_as_all_off() -> None:
    """``"practice_settings": []`` (or ``false``, ``0``, ``""``: a hand edit) is named as ``[1]`` is, not read as
    ``{}``: before, every switch read as clearly off, so the write-back blocked the note and cleared an owed
    Provenance ``not_allowed`` for good, as for settings that are no object before dfa3b42. ``null``: nothing."""
    for value, kind in (([], "an array"), (False, "a boolean"), (0, "a number"), ("", "a string")):
        said = f"practice_settings must be an object, got {kind}"
        assert read_switch({"practice_settings": value}, "enableWrite") == TenantSwitch(False, said)
        assert stored_problems({"practice_settings": value}) == [said]
    assert read_switch({"practice_settings": None}, "enableWrite") == TenantSwitch(False, None)
    assert stored_problems({"practice_settings": None}) == []
