"""`python -m query_service`: the read API on its own port."""

from query_service.api import create_app
from shared.config import Settings
from shared.server import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app(settings), settings, settings.query_port)
