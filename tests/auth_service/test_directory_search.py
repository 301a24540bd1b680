"""Search of the connect page's directory: case- and accent-insensitive word prefixes, ranked by the name."""

from __future__ import annotations

import pytest

from auth_service.pages.directory_search import DirectoryEntry, fold, search_entries


def entry(name: str, keywords: str = "") -> DirectoryEntry:
    return DirectoryEntry(key=name, name=name, detail=None, logo=None, provider_id="smart", keywords=keywords)


ENTRIES = [
    entry("St. Mary's Medical Center", "Boston, MA"),
    entry("Mary Free Bed Rehabilitation"),
    entry("Zürich Kinderspital", "Zürich, ZH"),
    entry("Maryland Health", "Formerly Old Line Clinic"),
    entry("Good Health"),
    entry("Goodman Family Practice", "Québec, QC"),
]


@pytest.mark.parametrize(
    ("text", "folded"),
    [("Zürich", "zurich"), ("ST. MARY'S", "st marys"), ("Québec – Nord", "quebec nord"), ("ﬁle", "file")],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("mary", ["Mary Free Bed Rehabilitation", "Maryland Health", "St. Mary's Medical Center"]),
        ("MARYS", ["St. Mary's Medical Center"]),
        ("st mary", ["St. Mary's Medical Center"]),
        ("zurich", ["Zürich Kinderspital"]),
        ("ZÜRICH kinder", ["Zürich Kinderspital"]),
        ("good", ["Good Health", "Goodman Family Practice"]),
        ("good health", ["Good Health"]),
        ("health", ["Good Health", "Maryland Health"]),
        ("boston", ["St. Mary's Medical Center"]),  # location
        ("old line", ["Maryland Health"]),  # another name it is known by
        ("quebec", ["Goodman Family Practice"]),
        ("ary", []),  # word prefixes only, not substrings
        ("mary zzz", []),
    ],
)
def test_ranked_matches(query: str, expected: list[str]) -> None:
    assert [e.name for e in search_entries(ENTRIES, query).entries] == expected


def test_name_prefix_ranks_before_a_word_inside_the_name_and_before_keywords() -> None:
    entries = [entry("Central Clinic", "Good"), entry("North Good Clinic"), entry("Good Clinic")]
    assert [e.name for e in search_entries(entries, "good").entries] == [
        "Good Clinic",
        "North Good Clinic",
        "Central Clinic",
    ]


def test_empty_query_lists_all_when_they_fit_and_nothing_otherwise() -> None:
    assert len(search_entries(ENTRIES, "  ").entries) == len(ENTRIES)
    many = [entry(f"Clinic {i}") for i in range(40)]
    result = search_entries(many, "")
    assert result.entries == () and result.total == 40


def test_results_are_limited_and_say_so() -> None:
    many = [entry(f"Clinic {i:03}") for i in range(40)]
    result = search_entries(many, "clinic", limit=25)
    assert len(result.entries) == 25 and result.total == 40 and result.truncated
    assert result.entries[0].name == "Clinic 000"


def test_long_queries_are_cut() -> None:
    assert len(search_entries(ENTRIES, "m" * 1000).query) == 100
