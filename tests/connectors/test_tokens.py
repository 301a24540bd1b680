"""TokenSource implementations: one refresh per 401, reuse until near expiry, never leak tokens in repr."""

from __future__ import annotations

import threading

import pytest

from connectors.errors import ConfigurationError, NeedsReauthError
from connectors.tokens import MintingTokenSource, StaticTokenSource, TokenSource


def test_static_source_refreshes_once_per_rejected_token() -> None:
    fresh = iter(["t2", "t3"])
    source = StaticTokenSource("t1", refresher=lambda: next(fresh))
    assert isinstance(source, TokenSource)
    assert source.refresh_after_unauthorized("t1") == "t2"
    assert source.refresh_after_unauthorized("t1") == "t2"  # a late 401 on the old token: no second refresh
    assert source.refresh_count == 1 and "t2" not in repr(source)
    with pytest.raises(NeedsReauthError):
        StaticTokenSource("t1").refresh_after_unauthorized("t1")
    with pytest.raises(ConfigurationError):
        StaticTokenSource("")


def test_minting_source_reuses_until_80_percent_of_lifetime() -> None:
    now = [0.0]
    minted: list[str] = []

    def mint() -> tuple[str, float]:
        minted.append(f"tok{len(minted)}")
        return minted[-1], 300.0  # eCW backend tokens: 5 min

    source = MintingTokenSource(mint, clock=lambda: now[0])
    assert source.get_token() == "tok0"
    now[0] = 239.0
    assert source.get_token() == "tok0"
    now[0] = 240.0
    assert source.get_token() == "tok1"
    assert source.refresh_after_unauthorized("tok1") == "tok2"
    assert source.refresh_after_unauthorized("tok1") == "tok2"
    assert source.mint_count == 3 and "tok" not in repr(source)


def test_minting_source_is_thread_safe() -> None:
    calls = []
    lock = threading.Lock()

    def mint() -> tuple[str, float]:
        with lock:
            calls.append(1)
        return "tok", 3600.0

    source = MintingTokenSource(mint)
    threads = [threading.Thread(target=source.get_token) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_minting_source_rejects_empty_tokens_and_bad_margin() -> None:
    with pytest.raises(NeedsReauthError):
        MintingTokenSource(lambda: ("", 60.0)).get_token()
    with pytest.raises(ConfigurationError):
        MintingTokenSource(lambda: ("t", 60.0), refresh_at=0)
