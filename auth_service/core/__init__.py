"""Configuration, logging redaction, keys and signed links: the web service's plumbing."""
