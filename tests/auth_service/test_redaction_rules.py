"""Each rule of the log redaction (SAL-38), one case per rule, so that dropping any one of them fails a test.

The sensitive names are written out here, not imported: a name removed from ``auth_service.core.redaction`` must
make its case fail. The values are opaque (not JWT-shaped), so only the name's own rule can mask them.
"""

from __future__ import annotations

import logging

import pytest

from auth_service.core.redaction import RedactionFilter, redact

SENSITIVE = (
    "code",
    "state",
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "client_secret",
    "client_assertion",
    "code_verifier",
    "launch",
    "password",
    "api_key",
    "link",
    "sig",
)
VALUE = "opaque-V4lue-0123"


@pytest.mark.parametrize("name", SENSITIVE)
def test_sal38_each_sensitive_name_is_masked_in_a_query_a_form_and_json(name: str) -> None:
    for text in (
        f"GET /api/x?a=1&{name}={VALUE} HTTP/1.1",  # a query string (uvicorn's access log)
        f"{name.upper()}={VALUE}",  # any case: a proxy's or a vendor's spelling
        f'{{"{name}": "{VALUE}", "ok": 1}}',  # JSON
        f"{{'{name}': '{VALUE}'}}",  # a Python dict's repr
    ):
        masked = redact(text)
        assert VALUE not in masked and "[REDACTED]" in masked, (text, masked)


def test_sal38_basic_credentials_are_masked_as_bearer_ones_are() -> None:
    for scheme in ("Basic", "basic", "Bearer"):
        masked = redact(f"Authorization: {scheme} YXBwOnMzY3JldDorLw==")
        assert "YXBwOnMzY3JldDorLw" not in masked and "[REDACTED]" in masked, masked


def _filtered(msg: object, args: object) -> str:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    assert RedactionFilter().filter(record)
    return record.getMessage()


def test_sal38_a_record_is_masked_in_its_message_its_mapping_args_and_a_message_that_is_no_string() -> None:
    assert VALUE not in _filtered(f"GET /cb?code={VALUE}", None)
    assert VALUE not in _filtered("refresh answer: %(body)s", ({"body": f'{{"refresh_token": "{VALUE}"}}'},))
    assert VALUE not in _filtered({"access_token": VALUE}, None)  # logging.info(some_dict) logs str(some_dict)
