"""The `invalid_state` page tells the patient how long a sign-in may take: the service's own
``OAUTH_STATE_TTL_SECONDS``, not a fixed "ten minutes" (a 30 s window is not ten minutes, nor is an hour)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from auth_service.pages.error_text import sign_in_window

CALLBACK = "/api/integrations/smart/callback"


@pytest.mark.parametrize(
    ("ttl", "words"), [(30, "30 seconds"), (90, "90 seconds"), (60, "1 minute"), (600, "10 minutes"), (3600, "1 hour")]
)
def test_sign_in_window_in_words(ttl: int, words: str) -> None:
    assert sign_in_window(ttl) == words


@pytest.mark.parametrize(("ttl", "words"), [(30, "within 30 seconds"), (3600, "within 1 hour")])
def test_expired_state_page_names_the_configured_window(make_app: Callable[..., Any], ttl: int, words: str) -> None:
    handle = make_app(OAUTH_STATE_TTL_SECONDS=ttl)
    page = handle.client.get(CALLBACK, params={"code": "c", "state": "gone"}, headers={"Accept": "text/html"})
    assert page.status_code == 400 and "invalid_state" in page.text
    assert words in page.text and "ten minutes" not in page.text
