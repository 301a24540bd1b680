"""``SandboxAdmin``: a small typed httpx client of the admin API, for tests, the CLI and the demo."""

from __future__ import annotations

import os
import ssl
from functools import cache
from typing import Any, Literal

import httpx

from sandbox.errors import SandboxAdminError

ClientType = Literal["public", "confidential-symmetric", "confidential-asymmetric", "backend"]


@cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default context for this trust setting, built once: loading the CA bundle costs ~30-50 ms of CPU
    per client, and tests start a sandbox (and its admin client) many times per process. ``SSLContext`` is safe to
    share between threads; nothing here changes it."""
    return httpx.create_ssl_context(verify=True, trust_env=True)


class SandboxAdmin:
    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        tls = _tls_context(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)
        self._http = httpx.Client(base_url=self.base_url + "/admin", timeout=timeout_s, verify=tls)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self._http.request(method, path, json=body)
        if resp.status_code >= 400:
            raise SandboxAdminError(resp.status_code, resp.text[:500])
        return resp.json()

    def register_client(
        self,
        client_id: str,
        client_type: ClientType,
        *,
        redirect_uris: list[str] | None = None,
        client_secret: str | None = None,
        jwks: dict[str, Any] | None = None,
        jwks_url: str | None = None,
        allowed_scopes: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "client_id": client_id,
            "client_type": client_type,
            "redirect_uris": redirect_uris or [],
            "client_secret": client_secret,
            "jwks": jwks,
            "jwks_url": jwks_url,
            "allowed_scopes": allowed_scopes,
        }
        result: dict[str, Any] = self._call("POST", "/clients", body)
        return result

    def preapprove(self, client_id: str, patient_id: str, scopes: str | None = None) -> None:
        self._call("POST", "/preapprove", {"client_id": client_id, "patient_id": patient_id, "scopes": scopes})

    def launch(self, patient_id: str | None, encounter_id: str | None = None) -> str:
        """An opaque single-use ``launch`` value for an EHR launch (SAL-06); ``None``: no patient in context."""
        return str(self._call("POST", "/launch", {"patient_id": patient_id, "encounter_id": encounter_id})["launch"])

    def ehr_launch_url(self, launch_url: str, patient_id: str, encounter_id: str | None = None) -> str:
        """URL of the EHR launcher page: open it in a browser to launch the app at ``launch_url`` (SAL-06)."""
        params = {"launch_url": launch_url, "patient_id": patient_id}
        if encounter_id is not None:
            params["encounter_id"] = encounter_id
        return str(httpx.URL(self.base_url + "/admin/ehr-launch", params=params))

    def logout(self, patient_id: str | None = None) -> int:
        """Simulate the user's session ending: online_access refresh tokens die."""
        return int(self._call("POST", "/logout", {"patient_id": patient_id})["revoked"])

    def set_fault(
        self,
        kind: str,
        *,
        path: str | None = None,
        method: str | None = None,
        times: int | None = 1,
        retry_after: str | None = None,
        delay_s: float = 1.0,
        error: str | None = None,
        error_description: str | None = None,
        processed: bool = False,
        severity: str | None = None,
        body_status: int | None = None,
        echo_as: str | None = None,
        shape: str | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "kind": kind,
            "path": path,
            "method": method,
            "times": times,
            "retry_after": retry_after,
            "delay_s": delay_s,
        }
        if error is not None:
            body["error"] = error
        if error_description is not None:
            body["error_description"] = error_description
        if processed:
            body["processed"] = True
        if severity is not None:
            body["severity"] = severity
        if body_status is not None:
            body["body_status"] = body_status
        if echo_as is not None:
            body["echo_as"] = echo_as
        if shape is not None:
            body["shape"] = shape
        self._call("POST", "/faults", body)

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def release_held(self) -> None:
        """Requests a ``slow`` fault is holding go on now; the armed faults stay."""
        self._call("POST", "/faults/release")

    def mutate(
        self,
        create: int = 0,
        update: int = 0,
        delete: int = 0,
        seed: int | None = None,
        patients: list[str] | None = None,
    ) -> dict[str, list[str]]:
        """Create/update/delete now (only ``patients``' records when given); returns the changed refs."""
        body: dict[str, Any] = {"create": create, "update": update, "delete": delete, "seed": seed}
        if patients:
            body["patients"] = patients
        result: dict[str, list[str]] = self._call("POST", "/mutate", body)
        return result

    def restore(self, *refs: str) -> list[str]:
        """Re-create deleted resources (``Type/id``) under their ids, as they were; returns the refs restored."""
        result: dict[str, list[str]] = self._call("POST", "/restore", {"resources": list(refs)})
        return result["restored"]

    def change_group_members(
        self, group_id: str, *, add: list[str] | None = None, remove: list[str] | None = None
    ) -> list[str]:
        """Add/remove members of ``group_id`` at runtime; returns the group's patient ids afterwards."""
        body = {"add": add or [], "remove": remove or []}
        result: dict[str, list[str]] = self._call("POST", f"/groups/{group_id}/members", body)
        return result["members"]

    def patients(self) -> list[str]:
        result: list[str] = self._call("GET", "/patients")
        return result

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Update runtime flags (see SandboxConfig); no arguments just reads them."""
        result: dict[str, Any] = self._call("POST", "/settings", changes) if changes else self._call("GET", "/settings")
        return result

    def reset_settings(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", "/settings")
        return result
