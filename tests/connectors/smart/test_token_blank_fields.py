"""A token answer's blank optional fields are absent ones (SAL-15), as a blank ``scope`` already was: a blank
``patient``/``encounter`` is no launch context (before, ``""`` was stored as the connection's encounter and written
over the launch context a refresh keeps), a blank ``expires_in`` is the 300 s default (before, the whole answer was
refused: a first sign-in failed, a refresh failed)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.smart import parse_token_response
from connectors.smart.token import DEFAULT_EXPIRES_IN

BASE = {"access_token": "AT", "token_type": "bearer"}


@pytest.mark.parametrize("blank", ["", "  "])
def test_sal15_a_blank_patient_or_encounter_is_no_launch_context(blank: str) -> None:
    token = parse_token_response({**BASE, "patient": blank, "encounter": blank, "need_patient_banner": True})
    assert token.patient is None and token.encounter is None
    assert token.launch_context() == {"need_patient_banner": True}


@pytest.mark.parametrize("blank", ["", " "])
def test_sal15_a_blank_expires_in_is_the_default_lifetime(blank: Any) -> None:
    token = parse_token_response({**BASE, "expires_in": blank})
    assert token.expires_in == DEFAULT_EXPIRES_IN


def test_sal15_context_ids_and_numeric_text_lifetimes_still_read() -> None:
    token = parse_token_response({**BASE, "patient": "p1", "encounter": 42, "expires_in": "3600"})
    assert (token.patient, token.encounter, token.expires_in) == ("p1", "42", 3600)
