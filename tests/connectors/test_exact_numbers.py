"""FHIR decimals keep the text the server sent (R4 datatypes: "the precision of the decimal value has
significance", 0.010 is not 0.01), from the REST page through landing, as Bulk NDJSON lines always did.

orjson parses every JSON number into a 64-bit float: ``7.10`` came back as ``7.1``, a 23-digit decimal lost its last
digits and an integer past 2**64 became ``1.2345678901234568e+29``, so a resource synced by REST search was stored
with other values than the same resource from a Bulk export (whose lines land as they are).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq

from connectors.fhir import FhirClient
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import BASE, TOKEN, Script, recording_policy
from warehouse import LandingZone

OBSERVATION = (
    b'{"resourceType":"Observation","id":"o1","status":"final",'
    b'"valueQuantity":{"value":7.10,"unit":"mmol/L"},'
    b'"referenceRange":[{"low":{"value":0.12345678901234567890123},"high":{"value":123456789012345678901234567890}}],'
    b'"component":[{"valueQuantity":{"value":1.5E-7}},{"valueInteger":-3},{"valueQuantity":{"value":100.00}}]}'
)
EXACT = (b'"value":7.10', b'"value":0.12345678901234567890123', b'"value":123456789012345678901234567890')
EXACT += (b'"value":1.5E-7', b'"valueInteger":-3', b'"value":100.00')


def _client(*bodies: bytes) -> FhirClient:
    responses = [httpx.Response(200, content=b, headers={"Content-Type": "application/fhir+json"}) for b in bodies]
    return FhirClient(BASE, StaticTokenSource(TOKEN), http=Script(*responses).client(), retry=recording_policy([]))


def test_search_page_and_read_keep_decimal_text(tmp_path: Path) -> None:
    page_body = b'{"resourceType":"Bundle","type":"searchset","total":1,"entry":[{"resource":' + OBSERVATION + b"}]}"
    client = _client(page_body, OBSERVATION)
    (page,) = client.search_pages("Observation")
    read = client.read("Observation", "o1")
    assert page.total == 1
    for resource in (page.resources[0], read):
        text = orjson.dumps(resource)
        assert [n for n in EXACT if n not in text] == []
    with LandingZone(tmp_path).writer("c1", "Observation", "r1", f"{BASE}/Observation") as writer:
        assert writer.add_resource(page.resources[0])
    landed = pq.read_table(writer.result.path).column("resource_json")[0].as_py().encode()
    assert [n for n in EXACT if n not in landed] == []


def test_ordinary_numbers_stay_python_numbers() -> None:
    """Numbers a float or int holds exactly come back as such (what the engine reads of a resource: sizes, totals)."""
    body = b'{"resourceType":"Observation","id":"o2","valueQuantity":{"value":7.5},"component":[{"valueInteger":42}]}'
    resource = _client(body).read("Observation", "o2")
    assert resource["valueQuantity"]["value"] == 7.5 and isinstance(resource["valueQuantity"]["value"], float)
    assert resource["component"][0]["valueInteger"] == 42 and isinstance(resource["component"][0]["valueInteger"], int)
