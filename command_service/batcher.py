"""Group commit: the events of concurrent commands are saved together, one transaction each batch.

The library locks the events table for every append so that positions commit in order; that
serialises appends, and batching is the lever (one `save()` of many events costs about one).
No request waits for a timer: whatever queued up while the previous batch was being saved is
the next batch. A batch that hits a version conflict is all-or-nothing in the library, so its
commands are then saved one by one, and only the conflicting one sees the conflict.

Every waiting command is answered whatever happens in the commit thread: its future is settled
with a result or an error, a waiter that went away (cancelled) is skipped before its events are
saved, and a waiter gives up after `wait_seconds` with a 503 (the store then decides whether
the command happened: a retry with the same Idempotency-Key finds it). A commit thread that
died or is stuck in one batch is reported (`problem()`, for `/ready`) and replaced.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from eventsourcing.persistence import IntegrityError

from shared.errors import ServiceUnavailable

log = logging.getLogger("tasks.commit")

Save = Callable[..., Sequence[Any]]
Recorded = Callable[[Sequence[Any]], int | None]


class CommitUnanswered(ServiceUnavailable):
    """The commit did not answer within the deadline; the store decides what happened."""

    def __init__(self) -> None:
        super().__init__(
            "The write was not confirmed in time; it may or may not have been stored. "
            "Retry with the same Idempotency-Key, or read the task, to find out",
            {"Retry-After": "1"},
        )


def _answer(future: Future[int], result: int | None, error: BaseException | None) -> None:
    """Settle a future unless it already is (a waiter that gave up cancelled it)."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)
    except InvalidStateError:
        pass


class _Pending:
    __slots__ = ("events", "future")

    def __init__(self, events: Sequence[Any]) -> None:
        self.events = events
        self.future: Future[int] = Future()


class GroupCommit:
    """`commit(aggregate)` from any thread; returns the position of the aggregate's last event."""

    def __init__(
        self,
        save: Save,
        max_batch: int = 100,
        recorded: Recorded | None = None,
        wait_seconds: float = 10.0,
        stuck_seconds: float = 30.0,
    ) -> None:
        self._save = save
        self._recorded = recorded
        self._max_batch = max_batch
        self._wait_seconds = wait_seconds
        self._stuck_seconds = stuck_seconds
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._generation = 0
        self._busy_since: float | None = None
        self.appended = 0
        self.restarts = 0
        self._thread = self._start()

    def _start(self) -> threading.Thread:
        self._generation += 1
        self._busy_since = None
        thread = threading.Thread(
            target=self._run, args=(self._generation,), name="group-commit", daemon=True
        )
        thread.start()
        return thread

    def problem(self) -> str | None:
        """What is wrong with the commit thread (`died`, `stuck`), None if nothing; a thread
        found dead or stuck is replaced at once, so later commands are saved."""
        with self._lock:
            if self._closed:
                return None
            if not self._thread.is_alive():
                found = "died"
            elif (
                self._busy_since is not None
                and time.monotonic() - self._busy_since > self._stuck_seconds
            ):
                found = "stuck"
            else:
                return None
            log.error("group-commit thread %s; starting a new one", found)
            self.restarts += 1
            self._thread = self._start()
            return found

    def commit(self, aggregate: Any) -> int:
        pending = self._enqueue(aggregate)
        try:
            return pending.future.result(timeout=self._wait_seconds)
        except TimeoutError:
            pending.future.cancel()  # still queued: never saved; being saved: the store decides
            raise CommitUnanswered() from None

    async def commit_async(self, aggregate: Any) -> int:
        """`commit` for the event loop: waits without holding a thread."""
        pending = self._enqueue(aggregate)
        try:
            # Cancelling the wait (timeout, or the client went away) cancels a queued commit.
            return await asyncio.wait_for(asyncio.wrap_future(pending.future), self._wait_seconds)
        except TimeoutError:
            raise CommitUnanswered() from None

    def _enqueue(self, aggregate: Any) -> _Pending:
        events = aggregate.collect_events()
        if not events:
            raise ValueError("nothing to commit")
        pending = _Pending(events)
        self._queue.put(pending)
        self.problem()
        return pending

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self, generation: int) -> None:
        while generation == self._generation:
            first = self._queue.get()
            if first is None:
                return
            batch: list[_Pending] = []
            closing = False
            item: _Pending | None = first
            while item is not None:
                # A waiter that already gave up is skipped: its events are never saved.
                if item.future.set_running_or_notify_cancel():
                    batch.append(item)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
            if batch:
                self._busy_since = time.monotonic()
                try:
                    self._flush(batch)
                except BaseException as exc:
                    for pending in batch:
                        _answer(pending.future, None, exc)
                    raise
                finally:
                    if generation == self._generation:
                        self._busy_since = None
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
                    _answer(item.future, None, exc)
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
                _answer(item.future, None, exc)
            else:
                self._settle([item], recordings)

    def _conflict(self, item: _Pending, exc: IntegrityError) -> None:
        """A conflict can be our own earlier attempt: a commit whose acknowledgement was lost
        (the connection dropped) and that the library's retry then ran into."""
        try:
            position = self._recorded(item.events) if self._recorded is not None else None
        except Exception as lookup:  # noqa: BLE001 - e.g. the database refuses connections
            _answer(item.future, None, lookup)
            return
        if position is None:
            _answer(item.future, None, exc)
            return
        log.warning("an append committed although its connection failed; answered as done")
        self.appended += len(item.events)
        _answer(item.future, position, None)

    def _settle(self, batch: list[_Pending], recordings: Sequence[Any]) -> None:
        """Recordings come back in the order the events went in."""
        self.appended += len(recordings)
        index = 0
        for item in batch:
            index += len(item.events)
            _answer(item.future, recordings[index - 1].notification.id, None)
