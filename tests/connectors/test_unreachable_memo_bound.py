"""The memo of origins found unreachable stays bounded however many hosts refuse: a Bulk manifest may list files on
thousands of hosts (files without a token may be on any public https host), and a long-lived process meets them all.
Real refused connections on 127.0.0.1 ports nothing listens on; the retry policy records its waits, never sleeps."""

from __future__ import annotations

import socket

import pytest

from connectors.budgets import UNREACHABLE_MEMO_MAX, forget_unreachable, unreachable_held, unreachable_reason
from connectors.errors import EhrUnreachableError
from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import recording_policy


def _closed_ports(n: int) -> list[int]:
    """``n`` distinct ports nothing listens on (each bound, read, then released)."""
    ports: set[int] = set()
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.add(int(sock.getsockname()[1]))
    return sorted(ports)


def test_the_unreachable_memo_holds_at_most_its_cap_of_origins() -> None:
    """Before, every refused origin stayed in the memo for good (an expired one went only when its own origin was
    asked again): the process's memory grew with every host that ever refused."""
    origins = [f"http://127.0.0.1:{port}" for port in _closed_ports(UNREACHABLE_MEMO_MAX + 40)]
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
