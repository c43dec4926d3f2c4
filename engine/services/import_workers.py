"""Validating an import's chunks in several processes while this one checks and writes.

Validation (JSON Schema, the rules, the title) is most of an import's work and uses one
core; on a machine with more, :func:`prepared_chunks` forks worker processes that each
validate whole chunks exactly as :meth:`ImportService._prepare` does here: through their own
:class:`~engine.services.ItemService` for the same actor, on their own database connection,
writing nothing (whatever validating wrote, such as a round robin's turn, is rolled back).
This process keeps the order of the file, checks duplicates and writes, as with one process.

Workers are forked, so they start with the loaded definitions and the file already in
memory; only each chunk's results travel back. Forking is only safe in a process without
other threads, so web processes import with one process (``workers=1``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import sessionmaker

from engine.errors import TrackerError
from engine.services.items import ItemService

if TYPE_CHECKING:
    from engine.services.imports import ImportPlan, ImportService, _Row

#: the longest a worker may take over one chunk before the import gives up on it (a lost worker)
CHUNK_TIMEOUT = 900
#: what the workers need, set in the parent right before the pool forks (and read there)
_context: dict[str, Any] = {}


def available() -> bool:
    """True where processes can be forked (Linux and other Unixes)."""
    return "fork" in multiprocessing.get_all_start_methods()


def default_workers() -> int:
    """One validating process per core, at most four; one where processes cannot be forked."""
    return min(4, os.cpu_count() or 1) if available() else 1


def may_fork() -> bool:
    """True when this process can fork workers safely: the platform forks, and this process
    runs no other thread (a thread's locks would be copied held: a web server's import runs
    on a thread of its own, so it validates in one process)."""
    return available() and threading.active_count() == 1


def prepared_chunks(service: ImportService, plan: ImportPlan, starts: list[int], workers: int) -> Iterator[list[_Row]]:
    """Each chunk (by its first row's index in ``starts``) validated by a worker, yielded in
    the file's order. A few chunks run ahead of the one being written, no more, so memory
    stays flat however long the file is. A worker's error is raised here."""
    _context.clear()
    _context.update(service=service, plan=plan)
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_start_worker)
    try:
        waiting = iter(starts)
        running = deque(pool.apply_async(_prepare_chunk, (start,)) for start in islice(waiting, 2 * workers))
        while running:
            try:
                rows = running.popleft().get(timeout=CHUNK_TIMEOUT)
            except multiprocessing.TimeoutError:
                raise TrackerError(
                    f"A process validating the rows gave no answer for {CHUNK_TIMEOUT // 60} minutes, so the "
                    "import stopped; the batches before it are saved.",
                    "Run it again with one process (tracker import --workers 1); rows already imported are "
                    "reported as duplicates.",
                ) from None
            following = next(waiting, None)
            if following is not None:
                running.append(pool.apply_async(_prepare_chunk, (following,)))
            yield rows
        pool.close()
    finally:
        pool.terminate()
        pool.join()
        _context.clear()


def _start_worker() -> None:
    """In a new worker: the default signal handlers, its own connections (the parent's are
    not its to use) and services.

    A handler the parent set (a worker or scheduler stopping gracefully on SIGTERM) would
    be inherited by the fork and keep the pool from terminating it: the import would hang
    where it should stop with its message."""
    from engine.services.imports import ImportService

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    parent: ImportService = _context["service"]
    engine = parent.session.get_bind()
    engine.dispose(close=False)
    session = sessionmaker(bind=engine, expire_on_commit=False)()
    items = ItemService(session, parent.actor, parent.registry, today=parent.items.today)
    _context["worker"] = ImportService(items, chunk_size=parent.chunk_size, max_rows=parent.max_rows)


def _prepare_chunk(start: int) -> list[_Row]:
    worker: ImportService = _context["worker"]
    plan: ImportPlan = _context["plan"]
    rows = worker._prepare(plan, plan.table.rows[start : start + worker.chunk_size])
    worker._end_chunk()
    for row in rows:
        row.cells = []  # the parent has them; only the results travel back
    return rows
