"""`python -m query_service`: the read API on its own port."""

import sys

from shared.server import main

if __name__ == "__main__":
    sys.exit(main("query_service", "composition:query_app_from_environment", "query_port"))
