"""A tenant's stored settings that are not a JSON object are named once as the tenant's, by every reader that
prefixes "the tenant's" (the engine's Bulk refusal, the auth service's switch read)."""

from __future__ import annotations

from connectors.tenant_switches import read_switch, stored_problems


def test_settings_that_are_no_object_read_as_the_tenants_settings_once() -> None:
    problem = read_switch(["not", "an", "object"], "enableBulkExport").problem
    assert problem == "settings must be an object, got an array"
    assert f"the tenant's {problem}" == "the tenant's settings must be an object, got an array"
    assert stored_problems("text") == ["settings must be an object, got a string"]
