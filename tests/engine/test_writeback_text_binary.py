"""A text note sent through a Binary (DWB-18) is the attachment the DocumentReference describes: the text opened by
the AI-draft banner (DWB-80), its ``size`` and ``hash`` those of the Binary's bytes; and the inline limit counts the
banner, as the vendor's size limit does."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

from connectors.fhir import FhirClient
from connectors.writeback import DRAFT_BANNER
from engine.writeback import write_note
from tests.engine.helpers import connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, set_tenant

SCOPE = "system/*.rs system/DocumentReference.c system/Binary.c"


def test_dwb18_80_a_text_note_over_the_inline_limit_with_its_banner_goes_as_a_binary_opened_by_the_banner(
    world, sb, http, request_log
) -> None:
    """The note's text fits the inline limit, the attachment as sent (banner first) does not: it goes as a Binary
    (it went inline, over the limit), and the Binary holds the banner and the text, the bytes whose ``size`` and
    ``hash`` the DocumentReference states (the Binary held the text alone: the EHR's copy had no AI-draft banner, and
    its size and hash were not those of the content referenced)."""
    set_tenant(world)
    conn = connect_backend(world, sb, http=http, scope=SCOPE)
    limit = 200
    text = "x" * (limit - len(f"{DRAFT_BANNER}\n\n".encode()) + 1)
    assert len(text.encode()) <= limit
    note = enqueue(world, conn, text=text, patient_id=sb.admin.patients()[0])
    done = write_note(world.env, replace(FAST, inline_max_bytes=limit), note.id)
    assert done.state == "written" and done.binary_id, done.reason
    assert len(request_log.paths("/fhir/Binary", "POST")) == 1
    [doc] = server_notes(world, conn, sb, note)
    attachment = doc["content"][0]["attachment"]
    assert attachment["url"] == f"Binary/{done.binary_id}" and "data" not in attachment
    client = FhirClient(sb.fhir_base, world.env.vault.token_source(conn), http=world.env.http)
    sent = base64.b64decode(client.read("Binary", done.binary_id)["data"])
    assert sent == f"{DRAFT_BANNER}\n\n{text}".encode()
    assert attachment["size"] == len(sent)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(sent, usedforsecurity=False).digest()).decode()
