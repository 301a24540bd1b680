"""The sandbox's authorization server: clients, scopes, codes, tokens and the OAuth endpoints."""
