"""SAL-38: codes, states and tokens never reach a log line, uvicorn's access log included."""

from __future__ import annotations

import httpx

from auth_service.app import create_app
from auth_service.server import log_config
from tests.auth_service.conftest import LiveServer
from tests.auth_service.logcapture import capture_all_logs


def test_sal38_access_log_redacts_query_secrets(make_settings) -> None:
    code, state = "AUTHCODE-7f3a9c", "STATEVALUE-91b2"

    def factory(base_url: str):
        settings = make_settings(APP_BASE_URL=base_url)
        return create_app(settings)

    server = LiveServer(factory, log_config=None)
    with server, capture_all_logs() as logs:
        r = httpx.get(f"{server.base_url}/api/integrations/smart/callback", params={"code": code, "state": state})
        assert r.status_code == 400
        r = httpx.get(f"{server.base_url}/api/integrations/ehr/jwks?access_token=TOKEN-abc123")
        assert r.status_code == 200
    text = logs.text
    assert "uvicorn.access" in text, text  # the access log was captured...
    assert "/api/integrations/smart/callback?" in text
    for secret in (code, state, "TOKEN-abc123"):
        assert secret not in text  # ...and redacted
    assert "code=[REDACTED]" in text


def test_log_config_adds_filter_when_enabled(make_settings) -> None:
    on = log_config(make_settings())
    off = log_config(make_settings(LOG_REDACTION_ENABLED="false"))
    assert all("ehrsync_redaction" in h.get("filters", []) for h in on["handlers"].values())
    assert all("ehrsync_redaction" not in h.get("filters", []) for h in off["handlers"].values())
