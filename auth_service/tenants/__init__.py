"""Tenant settings in the seed format (``practice_settings``) and the write-scope decision."""
