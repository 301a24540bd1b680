"""SQL-on-FHIR v2: ViewDefinitions compiled to one SELECT for DuckDB or PostgreSQL.

    view = load_view_definition("warehouse/viewdefs/patient.json")
    compiled = compile_view(view, DUCKDB, extra_columns=("connection_id", "tenant_id"))
    con.execute(compiled.sql)

Plain Python, no dependency beyond the warehouse's own; docs/SQL_ON_FHIR.md says what is supported and which
official test cases pass on each backend.
"""

from warehouse.sof.compiler import CompiledView, compile_view
from warehouse.sof.errors import ViewDefinitionError
from warehouse.sof.model import Column, SelectNode, ViewDefinition, load_view_definition

__all__ = [
    "Column",
    "CompiledView",
    "SelectNode",
    "ViewDefinition",
    "ViewDefinitionError",
    "compile_view",
    "load_view_definition",
]
