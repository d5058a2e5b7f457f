"""`python -m command_service`: the write API (and the relay) on its own port."""

import sys

from shared.server import main

if __name__ == "__main__":
    sys.exit(main("command_service", "composition:command_app_from_environment", "command_port"))
