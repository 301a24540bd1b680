"""FHIR data type names the compiler knows: to map declared column types to SQL, and to reject an
``ofType()`` on a choice element (``value.ofType(Quantity)``) that names no FHIR type."""

from __future__ import annotations

__all__ = ["COMPLEX", "INTEGER", "PRIMITIVE", "TEXT"]

INTEGER = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
TEXT = frozenset(
    {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "base64Binary", "xhtml"}
    | {"date", "dateTime", "instant", "time"}  # FHIR dates stay text: partial dates (1980, 1980-04) are legal
)
PRIMITIVE = INTEGER | TEXT | {"boolean", "decimal"}
# R4/R5 general-purpose and metadata types a choice element ``[x]`` may take.
COMPLEX = frozenset(
    {
        "Address", "Age", "Annotation", "Attachment", "Availability", "CodeableConcept", "CodeableReference",
        "Coding", "ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement", "Distance",
        "Dosage", "Duration", "Expression", "ExtendedContactDetail", "Extension", "HumanName", "Identifier",
        "Meta", "MonetaryComponent", "Money", "Narrative", "ParameterDefinition", "Period", "Quantity", "Range",
        "Ratio", "RatioRange", "Reference", "RelatedArtifact", "SampledData", "Signature", "Timing",
        "TriggerDefinition", "UsageContext", "VirtualServiceDetail",
    }
)  # fmt: skip
