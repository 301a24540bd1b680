"""Names and ids checked by a regular expression refuse a trailing newline: Python's ``$`` also matches just before
a final ``\\n``, so ``^...$`` with ``re.match`` let ``"Patient\\n"`` pass as a resource type, ``"123\\n"`` as a FHIR id
(a Group id, a resource read) and a PKCE verifier with a newline through. Found by the
mutation audit of the conformance rows (BDX-03); every such pattern now ends in ``\\Z``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from connectors.fhir._query import check_type
from connectors.smart.pkce import code_challenge_for


def _refused(call: Callable[[], Any], *errors: type[BaseException]) -> None:
    with pytest.raises(errors or (ValueError,)):
        call()


def test_bdx03_a_resource_type_with_a_trailing_newline_is_refused() -> None:
    check_type("Patient")
    _refused(lambda: check_type("Patient\n"))


def test_bdx03_a_group_id_with_a_trailing_newline_is_refused() -> None:
    from connectors.fhir.resource_types import ID_RE

    assert ID_RE.match("g-1") and not ID_RE.match("g-1\n")


def test_sal11_a_verifier_with_a_trailing_newline_is_refused() -> None:
    good = "a" * 43
    code_challenge_for(good)
    _refused(lambda: code_challenge_for(good + "\n"))
