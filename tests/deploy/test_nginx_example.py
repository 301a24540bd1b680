"""docs/DEPLOY.md's nginx example, dropped as it is into ``/etc/nginx/conf.d/`` (which Debian's and nginx.org's
``nginx.conf`` include inside ``http {}``), passes ``nginx -t`` with its sign-in rate limit and its 429: before, the
zone and ``limit_req_status`` were prose "in `http {}`", which a ``conf.d`` file cannot open (nginx refuses a second
``http {}`` there), and ``limit_req_status`` set there changed every other site's limits too.

The real nginx checks the file (``nginx -t``, nothing is started); certificates are made for the test."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md"


def _example() -> str:
    (example,) = re.findall(r"```nginx\n(.*?)```", DEPLOY.read_text(encoding="utf-8"), re.DOTALL)
    return str(example)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connect.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem, private = folder / "cert.pem", folder / "key.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem, private


def _nginx_t(tmp_path: Path, conf_d_file: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of a main file shaped as Debian's: ``conf.d/*.conf`` included inside ``http {}``."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    # Fails, never skips: a skip on a machine without nginx (CI's fresh one) would hide the check it stands for.
    assert nginx is not None, "nginx is not installed: run `make install-system` (Debian's 'nginx'; only nginx -t runs)"
    pem, key = _certificate(tmp_path)
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    text = conf_d_file.replace("/etc/ssl/connect.example.org.pem", str(pem))
    (conf_d / "ehrsync.conf").write_text(text.replace("/etc/ssl/connect.example.org.key", str(key)))
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n    include {conf_d}/*.conf;\n}}\n"
    )
    return subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_as_a_conf_d_file_passes_nginx_t(tmp_path: Path) -> None:
    example = _example()
    assert "limit_req_zone " in example and "limit_req_status 429;" in example and "limit_req zone=" in example
    checked = _nginx_t(tmp_path, example)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_a_second_http_block_in_a_conf_d_file_is_refused_as_the_doc_says(tmp_path: Path) -> None:
    """What "in `http {}`" led to: the zone wrapped in its own ``http {}`` inside the ``conf.d`` file."""
    top, server = _example().split("server {", 1)
    zone = next(line for line in top.splitlines() if line.startswith("limit_req_zone"))
    wrapped = f"http {{\n{zone}\n}}\nserver {{{server}"
    checked = _nginx_t(tmp_path, wrapped)
    assert checked.returncode != 0
    assert '"http" directive is not allowed here' in checked.stderr, checked.stderr
    assert '"http" directive is not allowed here' in DEPLOY.read_text(encoding="utf-8")
