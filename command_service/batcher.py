"""Group commit: the events of concurrent commands are saved together, one transaction each batch.

The library locks the events table for every append so that positions commit in order; that
serialises appends, and batching is the lever (one `save()` of many events costs about one).
No request waits for a timer: whatever queued up while the previous batch was being saved is
the next batch. A batch that hits a version conflict is all-or-nothing in the library, so its
commands are then saved one by one, and only the conflicting one sees the conflict.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from eventsourcing.persistence import IntegrityError

log = logging.getLogger("tasks.commit")

Save = Callable[..., Sequence[Any]]
Recorded = Callable[[Sequence[Any]], int | None]


class _Pending:
    __slots__ = ("events", "future")

    def __init__(self, events: Sequence[Any]) -> None:
        self.events = events
        self.future: Future[int] = Future()


class GroupCommit:
    """`commit(aggregate)` from any thread; returns the position of the aggregate's last event."""

    def __init__(self, save: Save, max_batch: int = 100, recorded: Recorded | None = None) -> None:
        self._save = save
        self._recorded = recorded
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.appended = 0
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def commit(self, aggregate: Any) -> int:
        events = aggregate.collect_events()
        if not events:
            raise ValueError("nothing to commit")
        pending = _Pending(events)
        self._queue.put(pending)
        return pending.future.result()

    async def commit_async(self, aggregate: Any) -> int:
        """`commit` for the event loop: waits without holding a thread."""
        events = aggregate.collect_events()
        if not events:
            raise ValueError("nothing to commit")
        pending = _Pending(events)
        self._queue.put(pending)
        return await asyncio.wrap_future(pending.future)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            closing = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            self._flush(batch)
            if closing:
                return

    def _flush(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            try:
                recordings = self._save(*(event for item in batch for event in item.events))
            except IntegrityError:
                pass  # one conflicting command: save them one by one below
            except Exception as exc:  # noqa: BLE001 - every waiting command gets the error
                for item in batch:
                    item.future.set_exception(exc)
                return
            else:
                self._settle(batch, recordings)
                return
        for item in batch:
            try:
                recordings = self._save(*item.events)
            except IntegrityError as exc:
                self._conflict(item, exc)
            except Exception as exc:  # noqa: BLE001 - the command's own thread re-raises it
                item.future.set_exception(exc)
            else:
                self._settle([item], recordings)

    def _conflict(self, item: _Pending, exc: IntegrityError) -> None:
        """A conflict can be our own earlier attempt: a commit whose acknowledgement was lost
        (the connection dropped) and that the library's retry then ran into."""
        position = self._recorded(item.events) if self._recorded is not None else None
        if position is None:
            item.future.set_exception(exc)
            return
        log.warning("an append committed although its connection failed; answered as done")
        self.appended += len(item.events)
        item.future.set_result(position)

    def _settle(self, batch: list[_Pending], recordings: Sequence[Any]) -> None:
        """Recordings come back in the order the events went in."""
        self.appended += len(recordings)
        index = 0
        for item in batch:
            index += len(item.events)
            item.future.set_result(recordings[index - 1].notification.id)
