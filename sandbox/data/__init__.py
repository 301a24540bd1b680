"""Synthetic, deterministic FHIR R4 data: generated lazily per patient, mutations kept as an overlay."""
