"""``python -m bench.memory_soak`` cannot rot: a tiny soak through the real jobs has the documented shape.

Memory figures are never asserted (RSS is noise at this size); the sample schedule and the report's keys are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.memory_soak import main, parse_args, slope_per_100


def test_a_tiny_soak_samples_every_sync_and_reports_slopes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "soak.json"
    argv = ["--syncs", "2", "--connections", "1", "--every", "1", "--mode", "single", "--patients", "3"]
    assert main([*argv, "--workdir", str(tmp_path / "work"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [s["syncs"] for s in report["samples"]] == [0, 1, 2]
    assert all(s["rss_mb"] > 0 and s["objects"] > 0 for s in report["samples"])
    assert set(report["slopes_per_100_syncs_second_half"]) == {
        "rss_mb",
        "traced_mb",
        "objects",
        "arrow_mb",
        "atexit_callbacks",
    }
    assert '"slopes_per_100_syncs_second_half"' in capsys.readouterr().out


def test_slope_is_least_squares_per_100_syncs() -> None:
    assert slope_per_100([(0, 10.0), (100, 11.0), (200, 12.0)]) == pytest.approx(1.0)
    assert slope_per_100([(5, 3.0)]) == 0.0


@pytest.mark.parametrize(
    ("argv", "flag"), [(["--syncs", "0"], "--syncs"), (["--full"], "--full"), (["--every", "0"], "--every")]
)
def test_bad_arguments_are_refused_with_the_flag_named(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert flag in capsys.readouterr().err
