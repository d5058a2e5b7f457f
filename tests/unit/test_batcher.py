"""Group commit: concurrent commands share a save; a conflict fails only its own command."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from command_service.batcher import GroupCommit


@dataclass
class Notification:
    id: int


@dataclass
class Recording:
    notification: Notification


class Aggregate:
    def __init__(self, *events: str) -> None:
        self.events = list(events)

    def collect_events(self) -> list[str]:
        collected, self.events = self.events, []
        return collected


class Store:
    """Appends events all or nothing, refusing any event named 'conflict'."""

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.calls: list[int] = []
        self.gate = threading.Event()

    def save(self, *events: Any) -> list[Recording]:
        self.gate.wait(5)
        self.calls.append(len(events))
        if "conflict" in events:
            raise IntegrityError("version conflict")
        start = len(self.saved)
        self.saved.extend(events)
        return [Recording(Notification(start + n + 1)) for n in range(len(events))]


def commit_in_threads(committer: GroupCommit, aggregates: list[Aggregate]) -> list[Any]:
    results: list[Any] = [None] * len(aggregates)

    def run(index: int) -> None:
        try:
            results[index] = committer.commit(aggregates[index])
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(aggregates))]
    for thread in threads:
        thread.start()
    return [threads, results]


def test_commands_queued_while_a_save_runs_are_saved_together_in_order() -> None:
    store = Store()
    committer = GroupCommit(store.save)
    aggregates = [Aggregate(f"e{n}") for n in range(10)]

    threads, results = commit_in_threads(committer, aggregates)
    time.sleep(0.05)  # the first save is held at the gate while the others queue
    store.gate.set()
    for thread in threads:
        thread.join()
    committer.close()

    assert sum(store.calls) == 10
    assert len(store.calls) < 10
    assert sorted(results) == list(range(1, 11))
    assert committer.appended == 10


def test_a_conflict_in_a_batch_fails_only_its_own_command() -> None:
    store = Store()
    committer = GroupCommit(store.save)
    aggregates = [Aggregate("a"), Aggregate("b"), Aggregate("conflict"), Aggregate("c", "d")]

    threads, results = commit_in_threads(committer, aggregates)
    time.sleep(0.05)
    store.gate.set()
    for thread in threads:
        thread.join()
    committer.close()

    assert isinstance(results[2], IntegrityError)
    assert sorted(store.saved) == ["a", "b", "c", "d"]
    assert results[0] == store.saved.index("a") + 1
    assert results[1] == store.saved.index("b") + 1
    assert results[3] == store.saved.index("d") + 1


def test_an_aggregate_with_nothing_to_save_is_refused() -> None:
    committer = GroupCommit(Store().save)

    with pytest.raises(ValueError, match="nothing to commit"):
        committer.commit(Aggregate())
    committer.close()


class Crash(BaseException):
    """Something no `except Exception` catches: it ends the commit thread."""


# The thread's death is the point of this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_commit_thread_that_dies_answers_its_batch_and_is_replaced() -> None:
    store = Store()
    store.gate.set()
    crashes = [Crash("thread killed")]

    def save(*events: Any) -> list[Recording]:
        if crashes:
            raise crashes.pop()
        return store.save(*events)

    committer = GroupCommit(save, wait_seconds=5)

    with pytest.raises(Crash):
        committer.commit(Aggregate("lost"))
    committer._thread.join(5)  # the thread ended with the crash

    assert committer.problem() == "died"
    assert committer.commit(Aggregate("later")) == 1
    assert committer.problem() is None
    committer.close()


def test_a_stuck_commit_thread_is_reported_and_a_new_one_serves_later_commands() -> None:
    release = threading.Event()
    store = Store()
    store.gate.set()

    def save(*events: Any) -> list[Recording]:
        if "slow" in events:
            release.wait(10)
        return store.save(*events)

    committer = GroupCommit(save, wait_seconds=0.2, stuck_seconds=0.1)

    with pytest.raises(Exception, match="not confirmed in time") as waited:
        committer.commit(Aggregate("slow"))
    assert waited.value.status == 503  # type: ignore[attr-defined]
    assert waited.value.headers == {"Retry-After": "1"}  # type: ignore[attr-defined]
    stuck = committer._thread
    assert committer.problem() == "stuck"
    assert committer.commit(Aggregate("later")) == 1
    release.set()
    stuck.join(10)  # the old thread finishes its batch, then ends
    committer.close()
    assert not stuck.is_alive()
    assert store.saved == ["later", "slow"]  # the store decided: the slow one happened too
