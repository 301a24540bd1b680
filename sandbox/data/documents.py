"""Clinical notes: DocumentReference and the Binary (text or PDF) each attachment points to."""

from __future__ import annotations

import base64
import random
from typing import Any

from sandbox.data import vocab
from sandbox.data.pdf import text_pdf
from sandbox.data.skeleton import Encounter, Skeleton, base_meta, updated_after
from sandbox.data.timefmt import instant

Resource = dict[str, Any]


def _note(sk: Skeleton, rng: random.Random, enc: Encounter) -> str:
    return (
        f"Progress note, visit of {instant(enc.start)[:10]}. {sk.given} {sk.family} was seen for "
        f"{rng.choice(vocab.NOTE_REASONS)}. Plan: {rng.choice(vocab.NOTE_PLANS)}."
    )


def _documents(sk: Skeleton) -> list[tuple[Resource, Resource]]:
    """DocumentReference and its Binary, built together so the attachment size always matches."""
    rng = sk.rng(10)
    pairs = []
    for k, enc in enumerate(sk.encounters[-rng.randint(1, 3) :]):
        text = _note(sk, rng, enc)
        pdf = k % 2 == 1
        content = text_pdf(text) if pdf else text.encode()
        ctype = "application/pdf" if pdf else "text/plain"
        ts = updated_after(rng, enc)
        bin_id = f"bin{sk.index}-{k}"
        binary = {
            "resourceType": "Binary",
            "id": bin_id,
            "meta": base_meta(ts),
            "contentType": ctype,
            "data": base64.b64encode(content).decode(),
        }
        doc = {
            "resourceType": "DocumentReference",
            "id": f"doc{sk.index}-{k}",
            "meta": base_meta(ts),
            "status": "current",
            "docStatus": "final",
            "type": vocab.DOC_TYPE,
            "category": vocab.DOC_CAT,
            "subject": {"reference": sk.ref},
            "date": instant(enc.end),
            "author": [{"reference": f"Practitioner/prac{enc.practitioner}"}],
            "content": [
                {
                    "attachment": {
                        "contentType": ctype,
                        "url": f"Binary/{bin_id}",
                        "size": len(content),
                        "title": "Progress note",
                        "creation": instant(enc.end),
                    }
                }
            ],
            "context": {
                "encounter": [{"reference": f"Encounter/{enc.id}"}],
                "period": {"start": instant(enc.start), "end": instant(enc.end)},
            },
        }
        pairs.append((doc, binary))
    return pairs


def documents(sk: Skeleton) -> list[Resource]:
    return [doc for doc, _ in _documents(sk)]


def binaries(sk: Skeleton) -> list[Resource]:
    return [binary for _, binary in _documents(sk)]
