"""Streams an export to NDJSON files: one type per file, rolled over every N lines, bounded memory."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import orjson


class TypeFiles:
    """Open files per type; ``close()`` returns ``(type, file name, line count)`` per file written."""

    def __init__(self, folder: Path, lines_per_file: int) -> None:
        self.folder = folder
        self.lines_per_file = lines_per_file
        self._open: dict[str, tuple[IO[bytes], str, int]] = {}
        self._seq: dict[str, int] = {}
        self.files: list[tuple[str, str, int]] = []

    def write(self, resource_type: str, resource: dict[str, Any]) -> None:
        current = self._open.get(resource_type)
        if current is None or current[2] >= self.lines_per_file:
            if current is not None:
                self._finish(resource_type)
            n = self._seq.get(resource_type, 0) + 1
            self._seq[resource_type] = n
            name = f"{resource_type}_{n}"
            current = ((self.folder / f"{name}.ndjson").open("wb", buffering=1 << 20), name, 0)
        fh, name, count = current
        fh.write(orjson.dumps(resource))
        fh.write(b"\n")
        self._open[resource_type] = (fh, name, count + 1)

    def _finish(self, resource_type: str) -> None:
        fh, name, count = self._open.pop(resource_type)
        fh.close()
        self.files.append((resource_type, name, count))

    def close(self) -> list[tuple[str, str, int]]:
        for t in list(self._open):
            self._finish(t)
        return self.files
