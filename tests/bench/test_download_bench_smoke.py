"""``python -m bench.download_bench`` cannot rot: it downloads a small file each way and prints every row."""

from __future__ import annotations

import orjson
import pytest

from bench.download_bench import BOUNDED, VARIANTS, main, ndjson


def test_generated_lines_are_distinct_observations() -> None:
    lines = ndjson(1).splitlines()
    assert len(lines) > 1000 and len(set(lines)) == len(lines)
    assert all(orjson.loads(line)["resourceType"] == "Observation" for line in lines[:10])


def test_the_benchmark_prints_each_variant_for_both_bodies_and_the_peaks(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--mb", "2", "--repeat", "1"])
    out = capsys.readouterr().out
    for name in (*VARIANTS, BOUNDED):
        assert f"plain {name}" in out and f"gzip  {name}" in out
    assert "most Python memory held at once" in out and out.count(" MiB\n") == 2
