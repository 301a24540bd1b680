"""Revision scripts; 0001 (auth service) then 0002 (pipelines sync tables)."""
