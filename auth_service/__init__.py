"""The SMART auth service. Keep this file import-free: ``pipelines`` imports ``store``."""
