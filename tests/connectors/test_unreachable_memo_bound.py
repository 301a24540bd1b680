"""The memo of origins found unreachable stays bounded however many hosts refuse: a Bulk manifest may list files on
thousands of hosts (files without a token may be on any public https host), and a long-lived process meets them all.
Real refused connections on loopback addresses, at a port
held bound and not listening; the retry policy records its waits, never sleeps."""

from __future__ import annotations

import pytest

from connectors.budgets import UNREACHABLE_MEMO_MAX, forget_unreachable, unreachable_held, unreachable_reason
from connectors.errors import EhrUnreachableError
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import recording_policy
from tests.fixtures.refused_ports import refusing_port


def _loopback_hosts(n: int) -> list[str]:
    """``n`` distinct loopback addresses (all of 127.0.0.0/8 is loopback): one refusing port on each is ``n``
    distinct origins, with no port released for another process to take."""
    return [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(n)]


def test_the_unreachable_memo_holds_at_most_its_cap_of_origins() -> None:
    """Before, every refused origin stayed in the memo for good (an expired one went only when its own origin was
    asked again): the process's memory grew with every host that ever refused."""
    with refusing_port() as port:
        _check_the_memo([f"http://{host}:{port}" for host in _loopback_hosts(UNREACHABLE_MEMO_MAX + 40)])


def _check_the_memo(origins: list[str]) -> None:
    try:
        for origin in origins:
            client = FhirClient(origin + "/fhir", StaticTokenSource("t"), retry=recording_policy([]))
            with pytest.raises(EhrUnreachableError, match="cannot reach the EHR"):
                client.read("Patient", "p1")
            assert unreachable_reason(origin) is not None
        assert unreachable_held() <= UNREACHABLE_MEMO_MAX
        assert unreachable_reason(origins[-1]) is not None  # the latest is remembered: its next request fails fast
        assert unreachable_reason(origins[0]) is None  # the least recently marked was forgotten
    finally:
        for origin in origins:
            forget_unreachable(origin)
