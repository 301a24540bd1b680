"""Everything that speaks to an EHR: SMART discovery and OAuth, FHIR REST, Bulk Data, vendor plugins.

Plain Python (no Dagster, no FastAPI). See docs/ARCHITECTURE.md for the public interface.
"""
