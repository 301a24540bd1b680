"""eCW's call budget (vendors.md §4: 250 calls a minute per practice base, every caller counted) spent by background
syncs: a patient connecting waits at most ``EHR_CALL_BUDGET_WAIT_SECONDS`` for a free call, then gets the documented
``503 ehr_unavailable`` (the "not answering right now, try again" page in a browser) instead of a page that hangs.

The sandbox serves its FHIR API at ``/fhir`` only, while an eCW base is ``{host}/fhir/r4/{practiceCode}``: the
sandbox's discovered configuration is put in the service's discovery cache under the eCW base, so the launch reaches
the code exchange, and a saturated budget stops that exchange before anything is sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from connectors.providers import get_provider
from connectors.smart import discover
from store.rate_windows import RateSlot
from tests.auth_service.ehr import running_service

LOGIN = "/api/integrations/smart/login?tenant=t1&provider=ecw"
BOUND_S = 0.5
FEW_SECONDS = 12.0  # 0.5 s expected; without the bound the call waits out the 60 s the budget is spent for


def _ecw_practice(sandbox: Any) -> dict[str, Any]:
    config = {"fhirBaseUrl": sandbox.base_url, "clientId": "ecw-app", "practiceCode": "ABCD12"}
    return {"ehrIntegrations": {"enabledProviders": ["ecw"], "providerConfigs": {"ecw": config}}}


def _saturate(svc: Any, fhir_base: str, seconds: float = 60.0) -> None:
    """Background syncs took every call of eCW's budget for this base from now for ``seconds``."""
    limit = get_provider("ecw").rate_limit
    assert limit is not None and limit.across_processes
    slices = min(24, limit.capacity)
    slot_s, per_slot = limit.window_s / slices, limit.capacity // slices
    first = int(time.time() // slot_s)
    hashed = hashlib.sha256(fhir_base.encode()).hexdigest()
    with svc.ctx.db.session() as session, session.begin():
        session.add_all(RateSlot(key=hashed, slot=first + i, used=per_slot) for i in range(int(seconds / slot_s) + 1))


def test_saturated_ecw_budget_makes_the_code_exchange_answer_busy_not_hang(make_settings: Any, sandbox: Any) -> None:
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    overrides = {"SMART_ISSUER_ALLOWLIST": base, "EHR_CALL_BUDGET_WAIT_SECONDS": BOUND_S}
    with running_service(make_settings, sandbox, _ecw_practice(sandbox), **overrides) as svc:
        smart = discover(sandbox.fhir_base, http=svc.ctx.http)
        svc.ctx.discovery.put(dataclasses.replace(smart, fhir_base=base, issuer=base))
        with httpx.Client(base_url=svc.base_url, timeout=30, follow_redirects=False) as browser:
            started = browser.get(LOGIN)
            assert started.status_code == 302, started.text
            state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
            _saturate(svc, base)
            began = time.monotonic()
            page = browser.get(
                "/api/integrations/smart/callback",
                params={"code": "c-1", "state": state},
                headers={"Accept": "text/html"},
            )
            elapsed = time.monotonic() - began
        assert page.status_code == 503 and "not answering right now" in page.text, page.text
        assert elapsed < FEW_SECONDS, elapsed
        events = svc.admin("GET", "/api/integrations/admin/audit").json()
        done = next(e for e in events if e["action"] == "authorize.complete")
        assert done["outcome"] == "failure" and done["detail"]["error_code"] == "ehr_unavailable", done


def test_saturated_ecw_budget_makes_the_launch_discovery_answer_busy(make_settings: Any, sandbox: Any) -> None:
    """The launch's discovery spends the budget too: ``503 ehr_unavailable`` within the bound, no redirect."""
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    overrides = {"SMART_ISSUER_ALLOWLIST": base, "EHR_CALL_BUDGET_WAIT_SECONDS": BOUND_S}
    with running_service(make_settings, sandbox, _ecw_practice(sandbox), **overrides) as svc:
        _saturate(svc, base)
        began = time.monotonic()
        r = httpx.get(svc.base_url + LOGIN, timeout=30, follow_redirects=False)
        elapsed = time.monotonic() - began
        assert (r.status_code, r.json()["error"]) == (503, "ehr_unavailable"), r.text
        assert "no free call within 0.5 s" in r.json()["message"]
        assert elapsed < FEW_SECONDS, elapsed
