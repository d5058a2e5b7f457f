"""`python -m command_service`: the write API (and the relay) on its own port."""

from shared.config import Settings
from shared.server import serve

if __name__ == "__main__":
    settings = Settings()
    serve("command_service.api:app_from_environment", settings, settings.command_port)
