"""A host app paging through ``GET /api/ehr/resources`` across ``ehrsync keys rotate`` goes on with the cursor it
holds while the old key is in INTEGRATIONS_TOKEN_ENC_KEYS_OLD, and reads every row exactly once. Before, the
cursor was an HMAC under the active key alone: after the rotation the next page was 400 ``invalid_request``
("'cursor' was altered or is not one of this service's cursors") and the caller had to start again."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from store import TokenCipher, rotate_keys
from tests.auth_service import test_resources_api as resources_api
from tests.auth_service.conftest import AppHandle
from tests.auth_service.keyutil import enc_key
from tests.auth_service.test_resources_api import OBSERVATIONS, PATH, World

world = resources_api.world  # the fixture: a DuckDB and a PostgreSQL warehouse with synced rows


def _page(handle: AppHandle, key: str, **params: Any) -> dict[str, Any]:
    r = handle.client.get(PATH, params=params, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("alphabet", [base64.b64encode, base64.urlsafe_b64encode])
def test_paging_goes_on_across_a_key_rotation(
    world: World, make_app: Callable[..., AppHandle], alphabet: Callable[[bytes], bytes]
) -> None:
    old = base64.b64encode(base64.b64decode(world.handle.settings.INTEGRATIONS_TOKEN_ENC_KEY.get_secret_value()))
    first = _page(world.handle, world.key_a, connectionId=world.conn_a, resourceType="Observation", limit=5)
    ids = [item["id"] for item in first["items"]]
    # the operator lists the old key in either alphabet the documented generators print
    keys = {
        "INTEGRATIONS_TOKEN_ENC_KEY": enc_key(),
        "INTEGRATIONS_TOKEN_ENC_KEYS_OLD": f"old:{alphabet(base64.b64decode(old)).decode()}",
    }
    rotate_keys(world.handle.app.state.ctx.db, TokenCipher.from_env(keys))  # what `ehrsync keys rotate` does
    rotated = make_app(WAREHOUSE_URL=world.target, **keys)
    cursor = first["nextCursor"]
    while cursor is not None:
        body = _page(
            rotated, world.key_a, connectionId=world.conn_a, resourceType="Observation", limit=5, cursor=cursor
        )
        ids += [item["id"] for item in body["items"]]
        cursor = body["nextCursor"]
    assert ids == [f"obs{i:02d}" for i in range(OBSERVATIONS)]
    # with the old key no longer listed, its cursor is refused as before (the caller starts again)
    removed = make_app(WAREHOUSE_URL=world.target, INTEGRATIONS_TOKEN_ENC_KEY=keys["INTEGRATIONS_TOKEN_ENC_KEY"])
    r = removed.client.get(
        PATH,
        params={"connectionId": world.conn_a, "cursor": first["nextCursor"], "resourceType": "Observation"},
        headers={"X-API-Key": world.key_a},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
