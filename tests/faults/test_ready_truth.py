"""`/ready` tells the truth: a relay or projector that is behind the store and has stopped
advancing for longer than `stall_seconds` makes it 503, naming the part; once they move again
it is ready. (Lag alone, while advancing, is not a reason: every other test runs ready.)"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from composition import create_app
from projector.projection import PROJECTION_LOCK_KEY
from shared.config import Settings
from tests.helpers import JSON, eventually, serving

pytestmark = pytest.mark.slow


async def test_a_stalled_relay_and_projector_make_ready_503_until_they_move_again(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(stall_seconds=1.0)
    async with serving(create_app(settings)) as client:
        first = await client.post("/api/v1/tasks", headers=JSON, json={"title": "first"})
        seen = await client.get(
            f"/api/v1/tasks/{first.json()['id']}",
            headers={"X-Min-Position": first.headers["x-event-position"]},
        )
        assert seen.status_code == 200
        assert (await client.get("/ready")).status_code == 200

        blocker = await asyncpg.connect(settings.database_url)
        try:
            # The projector cannot commit (a rebuild holds this lock the same way), and the
            # relay cannot record what it published.
            await blocker.execute("SELECT pg_advisory_lock($1)", PROJECTION_LOCK_KEY)
            held = blocker.transaction()
            await held.start()
            await blocker.execute("SELECT * FROM relay_position FOR UPDATE")
            await client.post("/api/v1/tasks", headers=JSON, json={"title": "second"})
            await client.get("/ready")  # the first look at the new lag

            async def unready() -> bool:
                return (await client.get("/ready")).status_code == 503

            await eventually(unready, 15)
            stalled = await client.get("/ready")
            await held.rollback()
            await blocker.execute("SELECT pg_advisory_unlock($1)", PROJECTION_LOCK_KEY)
        finally:
            await blocker.close()

        assert stalled.status_code == 503
        assert {"relay", "projector"} <= set(stalled.json()["details"])

        async def ready() -> bool:
            return (await client.get("/ready")).status_code == 200

        await eventually(ready, 15)
