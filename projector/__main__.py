"""`python -m projector`: the consumer, with /health, /ready and /metrics on its own port."""

from projector.consumer import create_app
from shared.config import Settings
from shared.server import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app(settings), settings, settings.projector_port)
