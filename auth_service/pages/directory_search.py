"""Find a health system by what the patient types: case- and accent-insensitive, word-prefix, ranked.

"mary" finds "St. Mary's Hospital", "ZURICH" finds "Zürich Klinik", "boston" finds a brand located in
Boston. Every word typed must start a word of the entry (its name, aliases, portal name or locations);
entries whose name matches rank first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

__all__ = ["DirectoryEntry", "SearchResult", "fold", "search_entries"]

_NON_WORD = re.compile(r"[^0-9a-z]+")
MAX_QUERY = 100


def fold(text: str) -> str:
    """Lower case, accents dropped, punctuation to spaces: the form both sides are compared in."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(_NON_WORD.sub(" ", stripped.replace("'", "").replace("’", "")).split())


@dataclass(frozen=True)
class DirectoryEntry:
    """One choice on the connect page: a brand (or the tenant's own provider) and the provider it uses."""

    key: str
    name: str
    detail: str | None
    logo: str | None
    provider_id: str
    keywords: str = ""

    @property
    def initial(self) -> str:
        return self.folded_name[:1].upper() or "?"

    # Folded once per entry (directories are cached per tenant), not once per keystroke.
    @cached_property
    def folded_name(self) -> str:
        return fold(self.name)

    @cached_property
    def name_words(self) -> tuple[str, ...]:
        return tuple(self.folded_name.split())

    @cached_property
    def all_words(self) -> tuple[str, ...]:
        return self.name_words + tuple(fold(self.keywords).split())


@dataclass(frozen=True)
class SearchResult:
    query: str
    entries: tuple[DirectoryEntry, ...]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.entries)


def _rank(entry: DirectoryEntry, query: str, tokens: list[str]) -> int | None:
    def starts_some(token: str, words: tuple[str, ...]) -> bool:
        return any(w.startswith(token) for w in words)

    name = entry.folded_name
    if name == query:
        return 0
    if name.startswith(query):
        return 1
    if all(starts_some(t, entry.name_words) for t in tokens):
        return 2
    if all(starts_some(t, entry.all_words) for t in tokens):
        return 3
    return None


def search_entries(entries: Sequence[DirectoryEntry], query: str, limit: int = 25) -> SearchResult:
    """Matching entries, best first (then by name); with no query, all of them when they fit ``limit``."""
    folded = fold(query[:MAX_QUERY])
    tokens = folded.split()
    if not tokens:
        ordered = sorted(entries, key=lambda e: e.folded_name)
        shown = tuple(ordered) if len(ordered) <= limit else ()
        return SearchResult(query="", entries=shown, total=len(ordered))
    scored = [(rank, e.folded_name, e) for e in entries if (rank := _rank(e, folded, tokens)) is not None]
    scored.sort(key=lambda item: (item[0], item[1]))
    return SearchResult(query=query[:MAX_QUERY], entries=tuple(e for _, _, e in scored[:limit]), total=len(scored))
