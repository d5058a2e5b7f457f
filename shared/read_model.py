"""What the projector and the readers agree on about the read model's progress: the channel the
projector NOTIFYs its new position on after every commit, and the row that holds that position.

The projector is the only writer of both; the query service LISTENs and reads, and a missed
signal is never wrong, only late (readers also poll the row).
"""

from __future__ import annotations

PROJECTION_CHANNEL = "tasks_projection"
"""NOTIFY channel: the new projection position after every commit (read-your-writes waits)."""

READ_POSITION = "SELECT position FROM projection_state WHERE name = 'projector'"
"""The projection position: every event at or below it is in the read table, none above."""
