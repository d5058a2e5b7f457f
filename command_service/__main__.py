"""`python -m command_service`: the write API (and the relay) on its own port."""

from command_service.api import create_app
from shared.config import Settings
from shared.server import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app(settings), settings, settings.command_port)
