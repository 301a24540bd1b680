"""Each rule of the log redaction (SAL-38), one case per rule, so that dropping any one of them fails a test.

The sensitive names are written out here, not imported: a name removed from ``auth_service.core.redaction`` must
make its case fail. The values are opaque (not JWT-shaped), so only the name's own rule can mask them. The expected
text is exact, so a rule that masks more than the value (the parameters after it, the rest of a JSON object) fails
too: the log line must still say what happened.
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
    for text, logged in (
        (f"GET /api/x?a=1&{name}={VALUE}&b=2 HTTP/1.1", f"GET /api/x?a=1&{name}=[REDACTED]&b=2 HTTP/1.1"),  # access log
        (f"{name.upper()}={VALUE}", f"{name.upper()}=[REDACTED]"),  # any case: a proxy's or a vendor's spelling
        (f'{{"{name}": "{VALUE}", "ok": "1"}}', f'{{"{name}": "[REDACTED]", "ok": "1"}}'),  # JSON
        (f"{{'{name}': '{VALUE}', 'ok': '1'}}", f"{{'{name}': '[REDACTED]', 'ok': '1'}}"),  # a Python dict's repr
    ):
        assert redact(text) == logged, text


def test_sal38_basic_credentials_are_masked_as_bearer_ones_are() -> None:
    for scheme in ("Basic", "basic", "Bearer"):
        assert (
            redact(f"Authorization: {scheme} YXBwOnMzY3JldDorLw== sent") == f"Authorization: {scheme} [REDACTED] sent"
        )


def _filtered(msg: object, args: object) -> str:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    assert RedactionFilter().filter(record)
    return record.getMessage()


def test_sal38_a_record_is_masked_in_its_message_its_mapping_args_and_a_message_that_is_no_string() -> None:
    assert _filtered(f"GET /cb?code={VALUE} 302", None) == "GET /cb?code=[REDACTED] 302"
    body = {"body": f'{{"refresh_token": "{VALUE}", "expires_in": 3600}}'}
    assert (
        _filtered("refresh answer: %(body)s", (body,))
        == 'refresh answer: {"refresh_token": "[REDACTED]", "expires_in": 3600}'
    )
    # logging.info(some_dict) logs str(some_dict)
    assert _filtered({"access_token": VALUE, "n": 1}, None) == "{'access_token': '[REDACTED]', 'n': 1}"
