"""The one error of the SQL-on-FHIR compiler: a ViewDefinition (or a FHIRPath in it) we cannot compile."""

from __future__ import annotations

from warehouse.errors import WarehouseError

__all__ = ["ViewDefinitionError"]


class ViewDefinitionError(WarehouseError):
    """A ViewDefinition is invalid or uses something the compiler does not support.

    ``path`` is the JSON path of the offending element (``$.select[1].column[0].path``) so the author can find it;
    the message names the problem. Neither ever contains resource data.
    """

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.problem = message
        self.path = path
