"""Base data plus the mutation overlay: created/updated resources and deleted ids, thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from sandbox.clock import Clock
from sandbox.data.generator import Generator
from sandbox.data.ids import PATIENT_TYPES, SHARED_TYPES, patient_index_of_reference
from sandbox.errors import ResourceGone, ResourceNotFound

Resource = dict[str, Any]
Key = tuple[str, str]


def patient_of(resource: Resource) -> int | None:
    """Compartment owner of a resource (by ``subject`` or ``patient``), or None."""
    if resource.get("resourceType") == "Patient":
        return patient_index_of_reference(str(resource.get("id", "")))
    for field in ("subject", "patient"):
        ref = resource.get(field)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return patient_index_of_reference(ref["reference"])
    return None


class DataStore:
    """What the FHIR API and bulk export read: generated base data with the overlay applied."""

    def __init__(self, generator: Generator, clock: Clock, id_prefix: Callable[[], str] = lambda: "") -> None:
        self.generator = generator
        self.clock = clock
        self._id_prefix = id_prefix  # ``created_id_prefix``, read at each create (a runtime setting)
        self._lock = threading.Lock()
        self._changed: dict[Key, Resource] = {}
        self._created: dict[int | None, list[Key]] = {}
        self._deleted: dict[Key, tuple[str, int | None]] = {}
        self._buried: dict[Key, Resource] = {}  # what a deleted resource was, for ``restore``
        self._serial = 0

    @property
    def patients(self) -> int:
        return self.generator.patients

    def _overlay(self, base: list[Resource], created: list[Key], types: Iterable[str]) -> list[Resource]:
        if not self._changed and not self._deleted:
            return base
        changed, deleted = self._changed, self._deleted
        out = [changed.get(k, r) for r in base if (k := (r["resourceType"], r["id"])) not in deleted]
        wanted = set(types)
        out.extend(changed[k] for k in created if k[0] in wanted and k not in deleted and k in changed)
        return out

    def patient_resources(self, index: int, types: Iterable[str] = PATIENT_TYPES) -> list[Resource]:
        types = tuple(types)
        base = self.generator.patient_resources(index, types)
        return self._overlay(base, list(self._created.get(index, ())), types)

    def shared_resources(self, types: Iterable[str] = SHARED_TYPES) -> list[Resource]:
        types = tuple(types)
        base = self.generator.shared_resources(types)
        return self._overlay(base, list(self._created.get(None, ())), types)

    def orphan_resources(self, types: Iterable[str]) -> list[Resource]:
        """Created resources of compartment-less types outside any patient (e.g. a POSTed Binary)."""
        wanted = set(types) - set(SHARED_TYPES)
        keys = [k for k in list(self._created.get(None, ())) if k[0] in wanted and k not in self._deleted]
        return [self._changed[k] for k in keys if k in self._changed]

    def group_members(self, group_id: str) -> list[int] | None:
        """Patient indexes of a group as it is now (an admin change rewrites the Group); None when unknown."""
        key = ("Group", group_id)
        if key in self._deleted:
            return None
        changed = self._changed.get(key)
        if changed is None:
            return self.generator.group_members(group_id)
        refs = (m.get("entity", {}).get("reference", "") for m in changed.get("member", []))
        return sorted({i for ref in refs if (i := patient_index_of_reference(str(ref))) is not None})

    def read(self, resource_type: str, resource_id: str) -> Resource:
        key = (resource_type, resource_id)
        if key in self._deleted:
            raise ResourceGone(f"{resource_type}/{resource_id} was deleted")
        found = self._changed.get(key) or self.generator.base_read(resource_type, resource_id)
        if found is None:
            raise ResourceNotFound(f"{resource_type}/{resource_id} does not exist")
        return found

    def _new_id(self, resource_type: str) -> str:
        self._serial += 1
        return f"{self._id_prefix()}new{self._serial}x{resource_type[:3].lower()}"

    def create(self, resource: Resource) -> Resource:
        """Store a new resource with a server-assigned id, versionId 1 and server-clock lastUpdated."""
        new: Resource = orjson.loads(orjson.dumps(resource))
        with self._lock:
            rtype = str(new["resourceType"])
            new["id"] = self._new_id(rtype)
            new["meta"] = {**new.get("meta", {}), "versionId": "1", "lastUpdated": self.clock.stamp()}
            key = (rtype, new["id"])
            self._changed[key] = new
            owner = patient_of(new) if rtype not in SHARED_TYPES else None
            self._created.setdefault(owner, []).append(key)
        return new

    def update(self, resource: Resource) -> Resource:
        """Replace a live resource, bumping ``versionId`` and stamping ``lastUpdated`` with the server clock."""
        rtype, rid = str(resource["resourceType"]), str(resource["id"])
        with self._lock:
            current = self.read(rtype, rid)
            new: Resource = orjson.loads(orjson.dumps(resource))
            version = int(current.get("meta", {}).get("versionId", "1")) + 1
            new["meta"] = {
                **new.get("meta", {}),
                "versionId": str(version),
                "lastUpdated": self.clock.stamp(),
            }
            self._changed[(rtype, rid)] = new
        return new

    def delete(self, resource_type: str, resource_id: str) -> None:
        """Hard delete: read answers 410, search and export no longer see it."""
        with self._lock:
            current = self.read(resource_type, resource_id)
            self._deleted[(resource_type, resource_id)] = (self.clock.stamp(), patient_of(current))
            self._buried[(resource_type, resource_id)] = current
            self._changed.pop((resource_type, resource_id), None)

    def restore(self, resource_type: str, resource_id: str) -> Resource:
        """Re-create a deleted resource under its id, as it was (an update-as-create after a delete): a new
        ``versionId`` and a server-clock ``lastUpdated``; search and export see it again, read answers it."""
        key = (resource_type, resource_id)
        with self._lock:
            if key not in self._deleted:
                raise ResourceNotFound(f"{resource_type}/{resource_id} is not deleted")
            old = self._buried.pop(key)
            new: Resource = orjson.loads(orjson.dumps(old))
            version, stamp = int(old.get("meta", {}).get("versionId", "1")) + 1, self.clock.stamp()
            new["meta"] = {**new.get("meta", {}), "versionId": str(version), "lastUpdated": stamp}
            del self._deleted[key]
            self._changed[key] = new
        return new

    def deleted_since(self, since: str, types: Iterable[str], patients: set[int] | None) -> list[tuple[str, str, str]]:
        """``(type, id, deleted_at)`` deleted strictly after ``since`` (a fixed-width instant string)."""
        wanted = set(types)
        with self._lock:
            items = list(self._deleted.items())
        return [
            (t, i, when)
            for (t, i), (when, owner) in items
            if t in wanted and when > since and (patients is None or owner in patients)
        ]
