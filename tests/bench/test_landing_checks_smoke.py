"""``python -m bench.landing_checks`` cannot rot: it runs on a few lines and prints its three rows."""

from __future__ import annotations

import sys

import orjson
import pytest

from bench.landing_checks import long_lines, main


def test_long_lines_are_long_valid_observations() -> None:
    lines = long_lines(20).splitlines()
    assert len(lines) == 20
    assert all(len(line) >= 2000 and orjson.loads(line)["resourceType"] == "Observation" for line in lines)


def test_the_benchmark_prints_each_variant_and_restores_the_recursion_limit(capsys: pytest.CaptureFixture[str]) -> None:
    limit = sys.getrecursionlimit()
    main(["--lines", "50", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "orjson.loads" in out and "recursion limit 5000 (brackets counted)" in out
    assert sys.getrecursionlimit() == limit
