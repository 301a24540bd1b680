"""One ``TenantSettingInvalidError`` for the engine and the auth service (``connectors.errors``).

Before, each had its own class: the engine's said ``tenant_setting_invalid``, the auth service's inherited
``configuration_error``, and a caller catching one missed the other. The engine records the code (a Bulk run that
fails ``tenant_setting_invalid``); the service's answer is still the documented 409 ``configuration_error``
(``service_error_from``, as tests/auth_service/test_stored_switches.py asserts over a real socket).
"""

from __future__ import annotations

from auth_service.api.errors import http_status
from auth_service.services.errors import service_error_from
from auth_service.tenants import settings as tenant_settings
from connectors.errors import ConfigurationError, TenantSettingInvalidError
from engine import errors as engine_errors


def test_the_engine_and_the_auth_service_raise_one_class_answered_as_before() -> None:
    assert engine_errors.TenantSettingInvalidError is tenant_settings.TenantSettingInvalidError
    assert tenant_settings.TenantSettingInvalidError is TenantSettingInvalidError
    assert issubclass(TenantSettingInvalidError, ConfigurationError)
    error = TenantSettingInvalidError("the tenant's practice_settings.smartFhir.enabled must be true or false")
    assert error.code == "tenant_setting_invalid"
    answer = service_error_from(error)
    assert (answer.code, http_status(answer), answer.message) == ("configuration_error", 409, error.message)
