"""ehrsync's settings, read once per process from the environment (see ``settings.app``).

Below every other package: it imports only pydantic, pydantic-settings, SQLAlchemy's URL parser and
``connectors.errors``.
"""

from settings.app import DEFAULT_STATE_DIR, ENGINE_VARIABLES, VAULT_KEY_HINT, AppSettings, load_app_settings

__all__ = ["DEFAULT_STATE_DIR", "ENGINE_VARIABLES", "VAULT_KEY_HINT", "AppSettings", "load_app_settings"]
