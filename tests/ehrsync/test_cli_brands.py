"""``ehrsync auth brands``: a tenant's connect-page directory loaded from a brands bundle file; bad input is one
line naming the problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.auth_service.brands_data import brands_bundle

_KEY = "t4JTv4brtHtzKipfTJdayl_rg659i4mCNwc8JnvbEhk="


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "INTEGRATIONS_TOKEN_ENC_KEY": _KEY,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "EHRSYNC_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("EHRSYNC_DATABASE_URL", None)
    cmd = [sys.executable, "-m", "ehrsync.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_load_a_brands_file_then_refuse_a_bad_one(tmp_path: Path) -> None:
    assert _run(tmp_path, "auth", "bootstrap", "--tenant", "t1", "--name", "Clinic").returncode == 0
    good = tmp_path / "brands.json"
    good.write_text(json.dumps(brands_bundle(40, "https://ehr.example/fhir")))
    proc = _run(tmp_path, "auth", "brands", "--tenant", "t1", "--source", "regional", str(good))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loaded 40 brand(s) into directory 'regional' of tenant t1"

    bad = brands_bundle(5, "https://ehr.example/fhir")
    bad["entry"][3]["resource"]["extension"][0]["extension"][1]["valueReference"]["reference"] = "Endpoint/nowhere"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    for args, names in [
        (["--tenant", "t1", "--source", "regional", str(tmp_path / "bad.json")], "entry 3 (Organization/org-1)"),
        (["--tenant", "nobody", "--source", "regional", str(good)], "tenant 'nobody' does not exist"),
        (["--tenant", "t1", "--source", "Bad Name", str(good)], "directory name 'Bad Name'"),
    ]:
        proc = _run(tmp_path, "auth", "brands", *args)
        error = proc.stderr.strip().splitlines()[-1]  # after the migration's log line, for the tenant check
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert error.startswith("Error: ") and names in error, error
