"""Which quota headers count and how (connectors.http.quota): the reset rule, every supported form, and any value
that is not plainly a number ignored without an error."""

from __future__ import annotations

import httpx
import pytest

from connectors.http.quota import MAX_RESET_S, Quota, read_quota

NOW = 1_800_000_000.0


def _read(headers: dict[str, str]) -> Quota | None:
    return read_quota(httpx.Headers(headers), NOW)


def test_ietf_field_picks_the_spent_policy_with_the_latest_reset_and_its_size():
    quota = _read({"RateLimit": '"minute";r=5;t=20, "day";r=0;t=3600', "RateLimit-Policy": '"day";q=1000;w=86400'})
    assert quota == Quota(0, 3600.0, 1000, "day", "RateLimit")


def test_older_forms_delta_seconds_and_epoch_reset():
    assert _read({"RateLimit": "limit=10, remaining=0, reset=5"}) == Quota(0, 5.0, 10, None, "RateLimit")
    draft = {"RateLimit-Remaining": "0", "RateLimit-Reset": "30", "RateLimit-Limit": "100"}
    assert _read(draft) == Quota(0, 30.0, 100, None, "RateLimit-Remaining")
    epoch = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 90)}
    assert _read(epoch) == Quota(0, 90.0, None, None, "X-RateLimit-Remaining")
    past = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 90)}
    assert _read(past) == Quota(0, 0.0, None, None, "X-RateLimit-Remaining")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"RateLimit": "garbage"},
        {"RateLimit": '"q";r=none;t=soon'},
        {"RateLimit": '"q";r=-1;t=5'},
        {"RateLimit-Remaining": "-1"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "at midnight"},
        {"X-RateLimit-Remaining": "0, 0", "X-RateLimit-Reset": "5"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(MAX_RESET_S + 1)},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1800000000000"},  # milliseconds: absurd
        {"X-RateLimit-Remaining": "9" * 40},
    ],
)
def test_unusable_headers_are_ignored(headers):
    assert _read(headers) is None


def test_policy_names_are_kept_only_when_plain():
    quota = _read({"RateLimit": '"bad name\\";r=0;t=5'})
    assert quota is not None and quota.policy is None and quota.spent
