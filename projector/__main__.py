"""`python -m projector`: the consumer, with /health, /ready and /metrics on its own port."""

from shared.config import Settings
from shared.server import serve

if __name__ == "__main__":
    settings = Settings()
    serve("projector.consumer:app_from_environment", settings, settings.projector_port)
