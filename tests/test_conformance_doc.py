"""docs/CONFORMANCE.md cannot rot: every conformance id the repository cites has a row, and every test a row
names exists and cites that id (in its name, e.g. ``test_sal07_...``, or in its docstring)."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CONFORMANCE.md"
PREFIXES = "SAL|BDX|DWB"
# An id, optionally followed by a range ("..") or a list ("/") of more numbers of the same prefix.
CITE = re.compile(rf"\b({PREFIXES})-(\d{{2,3}})((?:(?:\.\.|/)\d{{2,3}})*)\b")
# Ids in a test function's name: test_sal07_x, test_bdx01_02_03_x, test_sal19_sal33_x.
NAME_CITE = re.compile(rf"(?i)(?<![a-z])({PREFIXES})_?(\d{{2}})((?:_\d{{2}}(?![0-9a-z]))*)(?!\d)")
ROW = re.compile(rf"^\|\s*((?:{PREFIXES})-\d{{2,3}})\s*\|(.*)\|\s*$")
TEST_REF = re.compile(r"`(tests/[^`\s]+\.py)::([A-Za-z_][\w:]*)`")
SKIP_DIRS = {
    ".git",
    ".venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".dagster_home",
    "__pycache__",
    "node_modules",
    "build",
    "dist",
    "var",
    "test-artifacts",
}
SCANNED_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".html", ".sql", ".txt", ".mako"}


@dataclass(frozen=True)
class Row:
    conformance_id: str
    tests: tuple[str, ...]


def _id(prefix: str, number: str) -> str:
    return f"{prefix.upper()}-{int(number):02d}"


def cited_ids(text: str, *, inside_ranges: bool = False) -> set[str]:
    """Ids a text cites. A list ("BDX-21/22") cites each number; a range ("SAL-27..31") its two ends, and with
    ``inside_ranges`` every number between (the checklists skip numbers, so not every one of those is an id)."""
    found: set[str] = set()
    for match in CITE.finditer(text):
        prefix, previous = match.group(1), int(match.group(2))
        found.add(_id(prefix, match.group(2)))
        for separator, number in re.findall(r"(\.\.|/)(\d{2,3})", match.group(3)):
            if separator == ".." and inside_ranges:
                low, high = sorted((previous, int(number)))
                found.update(_id(prefix, str(n)) for n in range(low, high + 1))
            found.add(_id(prefix, number))
            previous = int(number)
    return found


def name_ids(function_name: str) -> set[str]:
    found: set[str] = set()
    for match in NAME_CITE.finditer(function_name):
        numbers = [match.group(2), *re.findall(r"\d{2}", match.group(3))]
        found.update(_id(match.group(1), n) for n in numbers)
    return found


def _repo_files() -> Iterator[Path]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in SCANNED_SUFFIXES and path != DOC:
                yield path


def repo_citations() -> dict[str, set[str]]:
    """Every id cited anywhere in the repository (this doc excepted) -> the files citing it."""
    where: dict[str, set[str]] = {}
    for path in _repo_files():
        for conformance_id in cited_ids(path.read_text(encoding="utf-8", errors="replace")):
            where.setdefault(conformance_id, set()).add(path.relative_to(ROOT).as_posix())
    return where


def doc_rows() -> list[Row]:
    rows: list[Row] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            tests_cell = match.group(2).rsplit("|", 1)[-1]
            refs = tuple(f"{m.group(1)}::{m.group(2)}" for m in TEST_REF.finditer(tests_cell))
            rows.append(Row(match.group(1), refs))
    return rows


def _test_functions(path: Path) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """``name`` or ``Class::name`` -> node, for the test functions pytest collects from one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and sub.name.startswith("test"):
                    found[f"{node.name}::{sub.name}"] = sub
    return found


def test_doc_has_one_row_per_id() -> None:
    ids = [row.conformance_id for row in doc_rows()]
    assert len(ids) > 50, f"{DOC} has {len(ids)} table rows; the table format changed or the file was truncated"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"{DOC.name} has several rows for {duplicates}"


def test_every_cited_id_has_a_row() -> None:
    documented = {row.conformance_id for row in doc_rows()}
    missing = {i: files for i, files in repo_citations().items() if i not in documented}
    lines = [f"{i} (cited in {', '.join(sorted(files))})" for i, files in sorted(missing.items())]
    assert not missing, f"add a row to docs/CONFORMANCE.md for: {'; '.join(lines)}"


def test_every_named_test_exists_and_cites_its_id() -> None:
    problems: list[str] = []
    parsed: dict[Path, dict[str, ast.FunctionDef | ast.AsyncFunctionDef]] = {}
    for row in doc_rows():
        for ref in row.tests:
            file_name, function_name = ref.split("::", 1)
            path = ROOT / file_name
            if not path.is_file():
                problems.append(f"{row.conformance_id}: {file_name} does not exist")
                continue
            if path not in parsed:
                parsed[path] = _test_functions(path)
            functions = parsed[path]
            node = functions.get(function_name)
            if node is None:
                problems.append(f"{row.conformance_id}: no test {ref}")
                continue
            cites = name_ids(node.name) | cited_ids(ast.get_docstring(node) or "", inside_ranges=True)
            if row.conformance_id not in cites:
                problems.append(f"{row.conformance_id}: {ref} cites it in neither its name nor its docstring")
    assert not problems, "docs/CONFORMANCE.md names tests wrongly:\n" + "\n".join(problems)


def test_uncovered_section_lists_exactly_the_rows_without_tests() -> None:
    text = DOC.read_text(encoding="utf-8")
    heading = "## Ids no test cites"
    assert heading in text, f"{DOC.name} lost its '{heading}' section"
    section = text.split(heading, 1)[1]
    listed = set(re.findall(rf"^- ((?:{PREFIXES})-\d{{2,3}}):", section, flags=re.MULTILINE))
    without_tests = {row.conformance_id for row in doc_rows() if not row.tests}
    assert listed == without_tests, (
        f"rows without tests but not listed: {sorted(without_tests - listed)}; "
        f"listed but a test cites them: {sorted(listed - without_tests)}"
    )
