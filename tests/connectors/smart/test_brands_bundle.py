"""SMART User-access Brands bundles: what the profile allows is accepted, what it requires is checked, and
every problem names its entry (connectors.smart.brands)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.smart.brands import BrandsBundleError, parse_brands_bundle

PORTAL = "http://hl7.org/fhir/StructureDefinition/organization-portal"
BRAND = "http://hl7.org/fhir/StructureDefinition/organization-brand"
ARGO = "http://fhir.org/argonaut/StructureDefinition/"


def bundle(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries), **extra}


def endpoint(eid: str, address: str = "https://fhir.good.example/r4", **extra: Any) -> dict[str, Any]:
    return {"resource": {"resourceType": "Endpoint", "id": eid, "address": address, **extra}}


def portal(*refs: str, **subs: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"url": k, "valueString": v} for k, v in subs.items()]
    items += [{"url": "portalEndpoint", "valueReference": {"reference": r}} for r in refs]
    return {"url": PORTAL, "extension": items}


def org(oid: str, name: str | None = "Good Health", *extensions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Organization", "id": oid, "extension": list(extensions), **extra}
    if name is not None:
        res["name"] = name
    return {"resource": res}


def test_the_annotated_example_of_the_spec() -> None:
    good = org(
        "good-health",
        "Good Health",
        {"url": BRAND, "extension": [{"url": "brandLogo", "valueUrl": "https://goodhealth.example.org/logo.svg"}]},
        portal("Endpoint/goodhealth-r4", "Endpoint/goodhealth-r2", portalName="GoodHealthCentral"),
        alias=["Goodie Bag Health"],
        telecom=[{"system": "url", "value": "https://brand.example.com"}],
        address=[{"city": "Boston", "state": "MA", "postalCode": "02111"}, {"postalCode": "02139"}],
        active=True,
    )
    parsed = parse_brands_bundle(
        bundle(
            good,
            endpoint("goodhealth-r4", "https://fhir.goodhealth.example.org/r4", status="active"),
            endpoint("goodhealth-r2", "https://fhir.goodhealth.example.org/r2"),
            timestamp="2023-09-05T20:00:43.241070-07:00",
        )
    )
    assert parsed.timestamp == "2023-09-05T20:00:43.241070-07:00"
    (brand,) = parsed.brands
    assert brand.name == "Good Health" and brand.aliases == ("Goodie Bag Health",)
    assert brand.logo == "https://goodhealth.example.org/logo.svg" and brand.website == "https://brand.example.com"
    assert brand.locations == ("Boston, MA 02111", "02139")
    assert brand.portals[0].name == "GoodHealthCentral"
    assert brand.portals[0].endpoints == (
        "https://fhir.goodhealth.example.org/r4",
        "https://fhir.goodhealth.example.org/r2",
    )


def test_references_relative_absolute_and_urn_all_resolve() -> None:
    parsed = parse_brands_bundle(
        bundle(
            {"fullUrl": "https://pub.example/fhir/Endpoint/a", **endpoint("a", "https://a.example/fhir")},
            {"fullUrl": "urn:uuid:7b1e", "resource": {"resourceType": "Endpoint", "address": "https://b.example/fhir"}},
            endpoint("c", "https://c.example/fhir"),
            {"fullUrl": "https://pub.example/fhir/Organization/x", **org("x", "Rel", portal("Endpoint/a"))},
            org("y", "Abs", portal("https://pub.example/fhir/Endpoint/a/_history/3")),
            org("z", "Urn", portal("urn:uuid:7b1e", "Endpoint/c")),
        )
    )
    assert [(b.name, b.portals[0].endpoints) for b in parsed.brands] == [
        ("Rel", ("https://a.example/fhir",)),
        ("Abs", ("https://a.example/fhir",)),
        ("Urn", ("https://b.example/fhir", "https://c.example/fhir")),
    ]


def test_optional_fields_missing_and_extra_fields_are_fine() -> None:
    parsed = parse_brands_bundle(
        bundle(
            org("bare", "Bare Clinic", unknownField={"x": 1}, meta={"lastUpdated": "2026-01-01T00:00:00Z"}),
            {"resource": {"resourceType": "Practitioner", "id": "p"}},  # other types are ignored
            endpoint("e", connectionType={"code": "hl7-fhir-rest"}, payloadType=[{"text": "none"}]),
            org(
                "data-absent",
                "Absent Portal",
                {
                    "url": PORTAL,
                    "extension": [
                        {
                            "url": "portalName",
                            "_valueString": {
                                "extension": [
                                    {
                                        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                        "valueCode": "asked-declined",
                                    }
                                ]
                            },
                        },
                        {"url": "portalEndpoint", "valueReference": {"reference": "Endpoint/e"}},
                    ],
                },
            ),
        )
    )
    bare, absent = parsed.brands
    assert bare.portals == () and bare.logo is None and parsed.timestamp is None
    assert absent.portals[0].name is None and absent.portals[0].endpoints == ("https://fhir.good.example/r4",)


def test_argonaut_extensions_managing_organization_and_part_of() -> None:
    parsed = parse_brands_bundle(
        bundle(
            endpoint("lab", "https://fhir.labs.example/r4", managingOrganization={"reference": "Organization/labs"}),
            org(
                "labs",
                "ExampleLabs",
                {"url": ARGO + "brand-logo", "valueUrl": "https://labs.example/logo.svg"},
                {"url": ARGO + "patient-access-name", "valueString": "ExampleLabs Patient portal"},
            ),
            org("affiliate", "ExampleLabs Alaska", partOf={"reference": "Organization/labs"}),
        )
    )
    labs, affiliate = parsed.brands
    assert labs.logo == "https://labs.example/logo.svg" and labs.portals[0].name == "ExampleLabs Patient portal"
    assert affiliate.portals == labs.portals  # an affiliate brand uses the portals of the brand it is part of


def test_inactive_brands_and_endpoints_are_left_out_and_odd_logos_dropped() -> None:
    parsed = parse_brands_bundle(
        bundle(
            endpoint("on"),
            endpoint("off", "https://old.example/fhir", status="off"),
            org("gone", "Closed Clinic", active=False),
            org(
                "x",
                "Open",
                portal("Endpoint/on", "Endpoint/off"),
                {"url": BRAND, "extension": [{"url": "brandLogo", "valueUrl": "javascript:alert(1)"}]},
            ),
        )
    )
    (brand,) = parsed.brands
    assert brand.portals[0].endpoints == ("https://fhir.good.example/r4",) and brand.logo is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"resourceType": "Patient"}, "resourceType must be 'Bundle'"),
        ({"resourceType": "Bundle", "type": "searchset"}, "Bundle.type must be 'collection'"),
        (bundle({"resource": {"id": "x"}}), "entry 0: has no resource with a resourceType"),
        (bundle(org("o", None)), "entry 0 (Organization/o): Organization.name is missing"),
        (bundle(endpoint("e", "ftp://x")), "entry 0 (Endpoint/e): address must be an absolute http(s) URL"),
        (
            bundle(org("o", "A", portal("Endpoint/missing"))),
            "entry 0 (Organization/o): endpoint reference 'Endpoint/missing' is not an Endpoint",
        ),
        (bundle(org("o", "A"), org("o", "B")), "entry 1 (Organization/o): duplicates another entry"),
    ],
)
def test_bad_bundles_name_the_problem_and_the_entry(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(BrandsBundleError) as info:
        parse_brands_bundle(data)
    assert problem in str(info.value)


def test_size_and_entry_count_are_bounded() -> None:
    big = json.dumps(bundle(*[org(f"o{i}", f"Clinic {i}") for i in range(50)]))
    with pytest.raises(BrandsBundleError, match="over the 1000-byte limit"):
        parse_brands_bundle(big, max_bytes=1000)
    with pytest.raises(BrandsBundleError, match="50 entries, over the limit of 10"):
        parse_brands_bundle(big, max_entries=10)
    with pytest.raises(BrandsBundleError, match="not valid JSON"):
        parse_brands_bundle(b"\xff\xfe")


def test_many_problems_are_listed_up_to_twenty() -> None:
    with pytest.raises(BrandsBundleError) as info:
        parse_brands_bundle(bundle(*[org(f"o{i}", None) for i in range(30)]))
    assert len(info.value.problems) == 20 and "(and 10 more)" in str(info.value)
