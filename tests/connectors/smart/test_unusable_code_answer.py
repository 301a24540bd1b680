"""An unusable 200 answer to a grant that starts a new grant (a code exchange, ``client_credentials``) hands the
caller the tokens it carried, to revoke (SAL-34): nobody will hold that grant. A refresh's answer hands none (its
rotated refresh token is kept instead: ``rotated_refresh_token``). Values never reach the message or repr."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import UnusableTokenAnswerError
from connectors.smart import PublicClientAuth, exchange_code, refresh_grant
from tests.connectors.smart.test_smart_token import TOKEN_URL, Recorder, ok


@pytest.mark.parametrize(
    ("body", "issued"),
    [
        ({"access_token": "AT-1", "refresh_token": "RT-1"}, (("refresh_token", "RT-1"), ("access_token", "AT-1"))),
        ({"token_type": "Bearer", "refresh_token": "RT-1"}, (("refresh_token", "RT-1"),)),
        ({"token_type": "Bearer", "access_token": 7, "refresh_token": "RT-1"}, (("refresh_token", "RT-1"),)),
        ({"token_type": "Bearer", "access_token": "AT-1", "refresh_token": 9}, (("access_token", "AT-1"),)),
        ({"token_type": "Bearer", "access_token": "AT-1", "expires_in": "soon"}, (("access_token", "AT-1"),)),
    ],
    ids=["no-token-type", "no-access-token", "access-token-number", "refresh-token-number", "bad-expires"],
)
def test_sal34_an_unusable_code_answer_carries_its_tokens_for_revocation(
    body: dict[str, Any], issued: tuple[tuple[str, str], ...]
) -> None:
    rec = Recorder(ok(body))
    with pytest.raises(UnusableTokenAnswerError) as info:
        exchange_code(
            TOKEN_URL,
            http=rec.client(),
            client_auth=PublicClientAuth("c"),
            code="CODE",
            redirect_uri="https://app/cb",
            code_verifier="v" * 43,
        )
    assert info.value.issued_tokens == issued and info.value.rotated_refresh_token is None
    assert not any(value in f"{info.value}{info.value!r}" for _, value in issued)


def test_sal24_an_unusable_refresh_answer_carries_no_tokens_to_revoke() -> None:
    rec = Recorder(ok({"access_token": "AT-1", "refresh_token": "RT-2"}))
    with pytest.raises(UnusableTokenAnswerError) as info:
        refresh_grant(TOKEN_URL, http=rec.client(), client_auth=PublicClientAuth("c"), refresh_token="RT-1")
    assert info.value.issued_tokens == () and info.value.rotated_refresh_token == "RT-2"
