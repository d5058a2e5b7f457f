"""`python -m projector`: the consumer, with /health, /ready and /metrics on its own port."""

import sys

from shared.server import main

if __name__ == "__main__":
    sys.exit(main("projector", "composition:projector_app_from_environment", "projector_port"))
