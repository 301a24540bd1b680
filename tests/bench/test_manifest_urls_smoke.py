"""``python -m bench.manifest_urls`` cannot rot: its manifests are valid and it prints its three rows."""

from __future__ import annotations

import pytest

from bench.manifest_urls import PAGE, main, manifest
from connectors.bulk.manifest import parse_manifest


@pytest.mark.parametrize("relative", [False, True])
def test_the_manifests_are_valid_with_urls_of_the_length_asked(relative: bool) -> None:
    parsed = parse_manifest(manifest(5, 2000, relative=relative), base_url=PAGE)
    assert len(parsed.output) == 5 and all(1900 <= len(item.url) <= 2100 for item in parsed.output)


def test_the_benchmark_prints_each_step(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--files", "20", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "orjson.loads" in out and "absolute URLs" in out and "references resolved" in out
