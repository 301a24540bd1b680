"""Deterministic base data: ``(seed, patient index)`` fully determines a patient's resources."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sandbox.data.clinical import BUILDERS
from sandbox.data.ids import PATIENT_TYPES, SHARED_TYPES, parse_id
from sandbox.data.shared import build_shared, group_members
from sandbox.data.skeleton import build_skeleton

Resource = dict[str, Any]


class Generator:
    """Builds base resources on demand; nothing per patient is kept, so memory does not grow with size."""

    def __init__(self, seed: int, patients: int) -> None:
        self.seed = seed
        self.patients = patients
        self._shared = build_shared(seed, patients)

    def patient_resources(self, index: int, types: Iterable[str] = PATIENT_TYPES) -> list[Resource]:
        """Base resources of one patient, in type order then generation order."""
        sk = build_skeleton(self.seed, index)
        out: list[Resource] = []
        for t in types:
            builder = BUILDERS.get(t)
            if builder is not None:
                out.extend(builder(sk))
        return out

    def shared_resources(self, types: Iterable[str] = SHARED_TYPES) -> list[Resource]:
        out: list[Resource] = []
        for t in types:
            out.extend(self._shared.get(t, ()))
        return out

    def group_members(self, group_id: str) -> list[int] | None:
        parsed = parse_id("Group", group_id)
        if parsed is None or parsed[1] >= len(self._shared["Group"]):
            return None
        return group_members(parsed[1], self.patients)

    def base_read(self, resource_type: str, resource_id: str) -> Resource | None:
        """The generated resource with that id, or None when the generator never made it."""
        parsed = parse_id(resource_type, resource_id)
        if parsed is None:
            return None
        shared, number = parsed
        if shared:
            return next((r for r in self._shared.get(resource_type, ()) if r["id"] == resource_id), None)
        if number >= self.patients:
            return None
        return next((r for r in self.patient_resources(number, (resource_type,)) if r["id"] == resource_id), None)
