"""``scripts/apt-install-stopped`` (``make install-system``): packages install while every service start is refused.

Debian's postgresql and nginx start their service from the package's postinst; the tests use neither service.
``apt-get`` is a stand-in on ``PATH`` (the real one would change this machine's packages): it records what it was
asked and runs the policy file the way ``invoke-rc.d`` does. The policy file is a stand-in too
(``EHRSYNC_TEST_POLICY_RC_D``), so the test never touches ``/usr/sbin/policy-rc.d``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "apt-install-stopped"

# Each call records its arguments and, while installing, what the policy says about starting a service.
_APT_GET = """#!/bin/sh
echo "apt-get $*" >>"$LOG"
if [ "$1" = "update" ]; then exit "${APT_UPDATE_STATUS:-0}"; fi
if [ "$1" = "install" ]; then
  if [ -x "$EHRSYNC_TEST_POLICY_RC_D" ]; then "$EHRSYNC_TEST_POLICY_RC_D" postgresql start; echo "policy $?" >>"$LOG";
  else echo "policy none" >>"$LOG"; fi
  exit "${APT_INSTALL_STATUS:-0}"
fi
"""


def _install(
    tmp_path: Path, *packages: str, status: int = 0, update_status: int = 0
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "apt-get").write_text(_APT_GET)
    (bin_dir / "apt-get").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG": str(log),
        "EHRSYNC_TEST_POLICY_RC_D": str(tmp_path / "policy-rc.d"),
        "APT_INSTALL_STATUS": str(status),
        "APT_UPDATE_STATUS": str(update_status),
    }
    proc = subprocess.run([str(SCRIPT), *packages], env=env, capture_output=True, text=True, timeout=30)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_a_service_start_is_refused_while_the_package_installs_and_the_policy_is_removed_after(tmp_path: Path) -> None:
    proc, calls = _install(tmp_path, "postgresql")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["apt-get update -qq", "apt-get install -y -qq postgresql", "policy 101"]
    assert not (tmp_path / "policy-rc.d").exists()


def test_a_policy_already_in_place_is_kept_as_it_was(tmp_path: Path) -> None:
    """An operator's own policy decides, and stays after the install."""
    own = tmp_path / "policy-rc.d"
    own.write_text("#!/bin/sh\nexit 0\n")
    own.chmod(0o755)
    proc, calls = _install(tmp_path, "nginx")
    assert proc.returncode == 0, proc.stderr
    assert calls[-1] == "policy 0" and own.read_text() == "#!/bin/sh\nexit 0\n"


@pytest.mark.parametrize("status", [1, 100])
def test_a_failed_install_fails_the_script_and_still_removes_the_policy(tmp_path: Path, status: int) -> None:
    proc, calls = _install(tmp_path, "nginx", status=status)
    assert proc.returncode == status and calls[-1] == "policy 101"
    assert not (tmp_path / "policy-rc.d").exists()


def test_a_failed_package_list_update_fails_the_script_before_installing_and_removes_the_policy(tmp_path: Path) -> None:
    proc, calls = _install(tmp_path, "postgresql", update_status=100)
    assert proc.returncode == 100 and calls == ["apt-get update -qq"]
    assert not (tmp_path / "policy-rc.d").exists()
