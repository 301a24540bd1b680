"""Server-rendered consent and error pages (no JavaScript, everything escaped)."""

from __future__ import annotations

from html import escape

_STYLE = "body{font-family:sans-serif;max-width:36em;margin:2em auto}button{margin-right:1em}"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def error_page(message: str) -> str:
    """Shown instead of redirecting when the client or redirect_uri cannot be trusted (SAL-12)."""
    return _page("Authorization error", f"<p id='error'>{escape(message)}</p>")


def consent_page(request_id: str, client_id: str, scopes: list[str], patients: list[tuple[str, str]] | None) -> str:
    """Consent form; ``patients`` given means the standalone-launch patient picker is shown (SAL-07)."""
    items = "".join(f"<li>{escape(s)}</li>" for s in scopes)
    picker = ""
    if patients is not None:
        options = "".join(f"<option value='{escape(pid)}'>{escape(label)}</option>" for pid, label in patients)
        picker = (
            "<p><label for='patient_id'>Patient</label> "
            f"<select id='patient_id' name='patient_id'>{options}</select></p>"
        )
    body = (
        f"<p><strong>{escape(client_id)}</strong> asks for access to:</p><ul>{items}</ul>"
        f"<form method='post' action='/oauth/authorize'>"
        f"<input type='hidden' name='request_id' value='{escape(request_id)}'>{picker}"
        "<button type='submit' name='decision' value='approve' id='approve'>Allow</button>"
        "<button type='submit' name='decision' value='deny' id='deny'>Deny</button></form>"
    )
    return _page("Authorize access", body)
