"""The one door: every change from the web, the API, the CLI, importers and plugins."""

from engine.services.items import ItemService
from engine.services.users import UserService

__all__ = ["ItemService", "UserService"]
