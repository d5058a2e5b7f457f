"""What every part of the task service agrees on: domain, settings, errors, messaging."""
