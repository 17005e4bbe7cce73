"""Group commit: one writer thread per process commits, in one transaction, everything that
arrived while the previous transaction was committing.

Callers hand in items (an accepted upload, an audit event); the writer takes every item waiting,
runs ``apply`` on them in one transaction and commits once (one fsync for the whole batch). What
an item's caller learns, it learns only after that commit:

- ``await commit(item)`` (the event loop; nothing blocks a thread while it waits) and
  ``commit_sync(item)`` (a thread) return ``apply``'s result for the item once its batch has
  committed and ``after_commit`` has run for the batch, or raise ``DatabaseError`` when the
  batch failed;
- ``post(item, on_failure)`` is fire-and-forget: nobody waits, and a failed batch hands the item
  to ``on_failure`` (e.g. the audit writer's retry-and-journal path), so it is not lost.

A batch that a unique constraint refused (``ConstraintViolation``: two requests racing with one
Idempotency-Key) is retried item by item, so only the item that caused it fails. ``apply`` uses
Core statements (multi-row inserts) on the session's connection, not the ORM's unit of work.
``after_commit`` (the batch's jobs enqueued in one Redis round trip) and the answers run on a
second thread, so the next transaction starts while they go out.

Under load a batch waits a little for company (``gather_seconds``, as PostgreSQL's
``commit_delay`` with ``commit_siblings``): a caller announces its item ahead of time
(``expect()``, e.g. an accept whose original is on its way to S3), and while announced items
have not arrived the writer waits for them, up to ``gather_seconds`` or until ``max_batch``
items are waiting, before it begins the next transaction. Each batch costs the same fixed round
trips (begin, the chain heads, the subscriptions, commit) whatever its size, so fewer, fuller
batches spend less CPU per item. With nothing announced (a lone request, an audit event) the
writer never waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from upload_service.db.engine import session_scope
from upload_service.db.errors import DatabaseError, ConstraintViolation, translate

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Writes a batch in the given session (no commit) and returns one result per item.
Apply = Callable[[Session, list[T]], Sequence[Any]]
#: Runs once a batch has committed, with the items and their results (before anyone is answered).
AfterCommit = Callable[[list[T], list[Any]], None]
#: Receives a posted item whose batch failed, and the error.
OnFailure = Callable[[T, BaseException], None]

#: At most this many items per transaction (a burst is committed in several batches).
MAX_BATCH = 256


class Arrival:
    """An item announced to the writer before it is handed in (``GroupCommit.expect``): a batch
    being gathered waits for it. Handing the item in with it, or ``cancel()``, ends the wait;
    either may come first, and ``cancel()`` after the item went in does nothing."""

    __slots__ = ("_writes", "pending")

    def __init__(self, writes: GroupCommit[Any]) -> None:
        self._writes = writes
        self.pending = True  # guarded by the writer's lock

    def cancel(self) -> None:
        self._writes._withdraw(self)


@dataclass
class _Entry(Generic[T]):
    item: T
    settle: Callable[[Any, BaseException | None], None]


class GroupCommit(Generic[T]):
    """One per process: ``start()`` in the lifespan, ``stop()`` at exit (drains what is pending)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        apply: Apply[T],
        *,
        after_commit: AfterCommit[T] | None = None,
        max_batch: int = MAX_BATCH,
        gather_seconds: float = 0.0,
        name: str = "group-commit",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if gather_seconds < 0:
            raise ValueError("gather_seconds must not be negative")
        self._sessions = sessions
        self._apply = apply
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._name = name
        self._gather_seconds = gather_seconds
        self._pending: list[_Entry[T]] = []
        self._announced = 0  # items announced (``expect``) and not yet handed in or withdrawn
        self._wake = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self._answers: ThreadPoolExecutor | None = None
        self._fallbacks: ThreadPoolExecutor | None = None
        #: Committed transactions and items (for tests and logs).
        self.batches = 0
        self.items = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._wake:
            if self._running:
                return
            self._running = True
        self._answers = ThreadPoolExecutor(1, thread_name_prefix=f"{self._name}-answers")
        self._fallbacks = ThreadPoolExecutor(1, thread_name_prefix=f"{self._name}-fallback")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Commit what is pending, answer everyone, then stop the threads."""
        with self._wake:
            if not self._running:
                return
            self._running = False
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        for pool in (self._answers, self._fallbacks):
            if pool is not None:
                pool.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def announced(self) -> int:
        """Items announced (``expect``) and neither handed in nor withdrawn yet."""
        with self._wake:
            return self._announced

    # --- submitting --------------------------------------------------------------------------

    def expect(self) -> Arrival:
        """Announce an item that will be handed in soon (``commit(item, arrival)``) or not at
        all (``arrival.cancel()``, which the caller must make sure of)."""
        arrival = Arrival(self)
        with self._wake:
            self._announced += 1
        return arrival

    def _withdraw(self, arrival: Arrival) -> None:
        with self._wake:
            if self._fulfil(arrival):
                self._wake.notify()

    def _fulfil(self, arrival: Arrival | None) -> bool:
        """Ends ``arrival``'s wait (the caller holds the lock); False if it had ended already."""
        if arrival is None or not arrival.pending:
            return False
        arrival.pending = False
        self._announced -= 1
        return True

    async def commit(self, item: T, arrival: Arrival | None = None) -> Any:
        """``item``'s result once its batch committed; ``DatabaseError`` if it did not. The
        future is resolved from the writer's thread with ``call_soon_threadsafe``. ``arrival``:
        the item's announcement (``expect``), fulfilled by handing the item in."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_resolve, future, result, error)

        self._submit(_Entry(item, settle), arrival)
        return await future

    def commit_sync(self, item: T, timeout: float | None = None, arrival: Arrival | None = None) -> Any:
        """``commit`` for a caller on a thread."""
        future: Future[Any] = Future()

        def settle(result: Any, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._submit(_Entry(item, settle), arrival)
        return future.result(timeout)

    def post(self, item: T, on_failure: OnFailure[T]) -> None:
        """Fire-and-forget into the next batch; ``on_failure(item, error)`` if it fails (also
        when the writer is not running: then at once, on the caller's thread)."""

        def settle(_result: Any, error: BaseException | None) -> None:
            if error is not None:
                assert self._fallbacks is not None
                self._fallbacks.submit(_guarded, on_failure, item, error)

        with self._wake:
            if self._running:
                self._pending.append(_Entry(item, settle))
                self._wake.notify()
                return
        on_failure(item, DatabaseError("the group commit writer is not running"))

    def _submit(self, entry: _Entry[T], arrival: Arrival | None) -> None:
        with self._wake:
            self._fulfil(arrival)
            if self._running:
                self._pending.append(entry)
                self._wake.notify()
                return
        entry.settle(None, DatabaseError("the group commit writer is not running"))

    # --- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and self._running:
                    self._wake.wait()
                if not self._pending:
                    return  # stopped and drained
                if self._gather_seconds and self._announced:
                    self._gather()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            try:
                self._commit_batch(batch)
            except BaseException:  # noqa: BLE001 - the writer must outlive any bug
                log.exception("group commit: unexpected error; the batch's callers get an error")
                self._answer(batch, [], DatabaseError("internal error in the group commit writer"))

    def _gather(self) -> None:
        """Wait (the lock held by the caller, released while waiting) until every announced
        item is in (or withdrawn), ``max_batch`` items are pending, ``gather_seconds`` have
        passed or the writer is stopped."""
        deadline = time.monotonic() + self._gather_seconds
        while self._running and self._announced and len(self._pending) < self._max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)

    def _commit_batch(self, batch: list[_Entry[T]]) -> None:
        items = [entry.item for entry in batch]
        try:
            results = self._transaction(items)
        except ConstraintViolation as exc:
            if len(batch) > 1:
                # One item (a racing Idempotency-Key) must not fail the others: isolate it.
                for entry in batch:
                    self._commit_batch([entry])
                return
            self._answer(batch, [], exc)
            return
        except DatabaseError as exc:
            log.warning("group commit of %d item(s) failed: %s", len(batch), exc)
            self._answer(batch, [], exc)
            return
        self.batches += 1
        self.items += len(batch)
        self._answer(batch, results, None)

    def _transaction(self, items: list[T]) -> list[Any]:
        try:
            with session_scope(self._sessions) as session:
                results = list(self._apply(session, items))
        except SQLAlchemyError as exc:
            raise translate(exc) from exc
        if len(results) != len(items):
            raise RuntimeError("apply must return one result per item")
        return results

    def _answer(self, batch: list[_Entry[T]], results: list[Any], error: BaseException | None) -> None:
        assert self._answers is not None

        def answer() -> None:
            if error is None and self._after_commit is not None:
                try:
                    self._after_commit([entry.item for entry in batch], results)
                except Exception:  # noqa: BLE001 - committed is committed; the caller decides
                    log.exception("group commit: after_commit failed")
            for index, entry in enumerate(batch):
                try:
                    entry.settle(results[index] if error is None else None, error)
                except Exception:  # noqa: BLE001 - a closed event loop must not stop the others
                    log.exception("group commit: could not answer a caller")

        self._answers.submit(answer)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the waiter was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _guarded(on_failure: OnFailure[Any], item: Any, error: BaseException) -> None:
    try:
        on_failure(item, error)
    except Exception:  # noqa: BLE001 - the fallback's own failure is its to log
        log.exception("group commit: the fallback for a failed item failed")
