"""`python -m query_service`: the read API on its own port."""

from shared.config import Settings
from shared.server import serve

if __name__ == "__main__":
    settings = Settings()
    serve("query_service.api:app_from_environment", settings, settings.query_port)
