"""The journal's group commit and reads from the event loop: psycopg's libpq wrapper
(``psycopg.pq.PGconn``) in non-blocking pipeline mode, driven by trio's
``wait_writable`` / ``wait_readable`` on its socket, so no thread is handed anything.

A group is sent as it is in the writer thread (``JournalDatabase.apply``): the same
statements of ``sql.py`` in the same ranks, their parameters dumped by psycopg's own
adapters (a ``Transformer`` of the connection, as a cursor does), each statement
prepared once a connection and a signature of parameter types (what ``executemany``
does), then one Sync. Everything before the Sync is one transaction on the server
(the extended protocol's implicit one: committed at the Sync if every statement
succeeded, rolled back if one failed), so no BEGIN and COMMIT travel, and with
``synchronous_commit = on`` the Sync's answer comes once the WAL is flushed.

A statement the server refuses fails the group with psycopg's error for it, and the
connection stays (the server skipped to the Sync); a connection that failed, or was
left half way through a group, is closed, and the next group opens another (in a
thread: connecting is rare and libpq's connect would block).

A read (``LoopReader``, one connection of the journal's read pool) is one question (a
``Select`` of ``switch/store/questions.py``, in ``sql.py``'s dialect): its statement
prepared once a connection, then each time
Bind/Execute and a Sync in one write, binary results turned into rows by psycopg's
loaders (a cursor's), and the rows into the answer by the ``Select``'s own function,
the one the thread's read uses. A refusal is the server's error and leaves the
connection in use (the Sync ends it); a connection lost, or a read cancelled or failed
with its results not all read, is closed, and the next read opens another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from itertools import count
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import pq
from psycopg.abc import Transformer
from psycopg.adapt import PyFormat
from psycopg.adapt import Transformer as make_transformer

from switch.store.postgresql.sql import Connection
from switch.store.questions import Row, Select
from switch.store.writes import Write

SEND_CHUNK = 64
"""Statements dumped and sent between two turns of the event loop: a group of 512
changes is about a thousand statements, a few milliseconds of dumping that other tasks
should not wait behind all at once."""

_COMMAND_OK = pq.ExecStatus.COMMAND_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_BINARY = pq.Format.BINARY

Answer = TypeVar("Answer")


@cache  # the statements of sql.py: a few dozen
def numbered(statement: str) -> bytes:
    """A statement of ``sql.py`` (``%s`` placeholders) in the server's own form
    (``$1``, ``$2``...), as psycopg sends it."""
    parts = statement.split("%s")
    if any("%" in part for part in parts):
        raise ValueError(f"only %s placeholders are supported: {statement!r}")
    text = parts[0] + "".join(f"${index}{part}" for index, part in enumerate(parts[1:], 1))
    return text.encode()


class LoopWriter:
    """Commits groups of writes from the event loop; one group at a time (the journal's
    writer task is its only caller). ``connect`` is a blocking function, run in a
    thread, that gives the writer's connection (``JournalDatabase.writer``)."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._connection: Connection | None = None
        self._transformer: Transformer | None = None
        self._encoding = "utf-8"
        self._statements: dict[str, bytes] = {}
        self._prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._names = count()
        self._formats: dict[int, list[PyFormat]] = {}

    async def apply(self, writes: Iterable[Write]) -> None:
        """Runs the writes in one transaction, all of them or none, pipelined, with one
        WAL flush; raises psycopg's error if the server refused one or the connection
        failed."""
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            connection = await trio.to_thread.run_sync(self._connect)
            self._take(connection)
        try:
            refused = await self._commit(connection.pgconn, sorted(writes, key=_rank))
        except BaseException:  # failed or left half way through the group: not used again
            connection.close()
            self._connection = None
            raise
        connection.pgconn.exit_pipeline_mode()
        if refused is not None:  # the server skipped to the Sync: the connection is fine
            raise refused

    def _take(self, connection: Connection) -> None:
        self._connection = connection
        self._transformer = make_transformer(connection)
        self._encoding = connection.info.encoding
        self._prepared.clear()  # prepared statements are the server session's
        connection.pgconn.nonblocking = 1

    async def _commit(self, pgconn: pq.abc.PGconn, writes: list[Write]) -> psycopg.Error | None:
        """Sends the group and reads its results: the server's error if it refused a
        statement (and so rolled the group back)."""
        transformer = self._transformer
        assert transformer is not None
        pgconn.enter_pipeline_mode()
        preparing: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        for index, write in enumerate(writes, 1):
            parameters = write.parameters
            values = transformer.dump_sequence(parameters, self._formats_of(len(parameters)))
            statement = self._numbered(write.statement)
            key = (statement, transformer.types or ())
            name = self._prepared.get(key) or preparing.get(key)
            if name is None:
                name = preparing[key] = f"journal_{next(self._names)}".encode()
                pgconn.send_prepare(name, statement, param_types=key[1])
            pgconn.send_query_prepared(name, values, param_formats=transformer.formats)
            if index % SEND_CHUNK == 0:
                pgconn.flush()  # what the socket takes now; the rest after the Sync
                await trio.lowlevel.checkpoint()
        pgconn.pipeline_sync()
        await _flush(pgconn)
        refused = await self._results(pgconn)
        if refused is None:
            # Only now: a statement prepared in a group that failed may not exist (its
            # name is not used again either way).
            self._prepared.update(preparing)
        return refused

    async def _results(self, pgconn: pq.abc.PGconn) -> psycopg.Error | None:
        """Reads every result up to the Sync's; the first error among them, if any."""
        error: psycopg.Error | None = None
        while True:
            result = await _next_result(pgconn, error)
            status = result.status
            if status == _PIPELINE_SYNC:
                return error
            if status == _FATAL_ERROR and error is None:
                error = psycopg.errors.error_from_result(result, encoding=self._encoding)
            # COMMAND_OK, or PIPELINE_ABORTED for each statement after a failed one.

    def _numbered(self, statement: str) -> bytes:
        found = self._statements.get(statement)
        if found is None:
            found = self._statements[statement] = numbered(statement)
        return found

    def _formats_of(self, length: int) -> list[PyFormat]:
        formats = self._formats.get(length)
        if formats is None:
            formats = self._formats[length] = [PyFormat.AUTO] * length
        return formats


class LoopReader:
    """One connection of the journal's read pool, read from the event loop; one read at
    a time (the pool hands it to one caller). ``connect`` is a blocking function, run in
    a thread, that opens a connection (``JournalDatabase.connect``)."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._connection: Connection | None = None
        self._transformer: Transformer | None = None
        self._encoding = "utf-8"
        # (statement, parameter types) -> the prepared name and its columns' names
        self._prepared: dict[tuple[str, tuple[int, ...]], tuple[bytes, list[str]]] = {}
        self._names = count()
        self._formats: dict[int, list[PyFormat]] = {}
        self.connects = 0
        """Connections opened so far (the first, and one after each lost)."""

    async def read(self, select: Select[Answer]) -> Answer:
        """The answer to ``select``; psycopg's error if the server refused it (the
        connection stays) or the connection failed (it is closed: the next read opens
        another). Cancelled with its results not all read, the connection is closed too,
        never used again with an answer pending."""
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            self.close()
            connection = await trio.to_thread.run_sync(self._connect)
            self._take(connection)
        try:
            rows, refused = await self._query(connection.pgconn, select)
        except BaseException:
            self.close()
            raise
        if refused is not None:
            raise refused
        return select.answer(rows)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _take(self, connection: Connection) -> None:
        self._connection = connection
        self._transformer = make_transformer(connection)
        self._encoding = connection.info.encoding
        self._prepared.clear()  # prepared statements are the server session's
        self.connects += 1
        pgconn = connection.pgconn
        pgconn.nonblocking = 1
        pgconn.enter_pipeline_mode()  # for good: a statement prepared and run in one write

    async def _query(
        self, pgconn: pq.abc.PGconn, select: Select[Any]
    ) -> tuple[list[Row], psycopg.Error | None]:
        transformer = self._transformer
        assert transformer is not None
        parameters = select.parameters
        formats = self._formats.get(len(parameters))
        if formats is None:
            formats = self._formats[len(parameters)] = [PyFormat.AUTO] * len(parameters)
        values = transformer.dump_sequence(parameters, formats)
        key = (select.statement, transformer.types or ())
        prepared = self._prepared.get(key)
        if prepared is None:
            name = f"read_{next(self._names)}".encode()
            pgconn.send_prepare(name, numbered(select.statement), param_types=key[1])
        else:
            name = prepared[0]
        pgconn.send_query_prepared(
            name, values, param_formats=transformer.formats, result_format=_BINARY
        )
        pgconn.pipeline_sync()
        await _flush(pgconn)
        rows: list[Row] = []
        error: psycopg.Error | None = None
        while True:
            result = await _next_result(pgconn, error)
            status = result.status
            if status == _TUPLES_OK:
                if prepared is None:
                    columns = [
                        (result.fname(column) or b"").decode(self._encoding)
                        for column in range(result.nfields)
                    ]
                    prepared = (name, columns)
                rows = self._rows(transformer, result, prepared[1])
            elif status == _PIPELINE_SYNC:
                break
            elif status == _FATAL_ERROR and error is None:
                error = psycopg.errors.error_from_result(result, encoding=self._encoding)
        if error is None and prepared is not None:
            # Only now: a statement prepared in a read that failed may not exist (its
            # name is not used again either way).
            self._prepared[key] = prepared
        elif error is not None:
            # Prepared again next time: a refusal may be the prepared statement's own
            # ("cached plan must not change result type", after a schema change).
            self._prepared.pop(key, None)
        return rows, error

    @staticmethod
    def _rows(transformer: Transformer, result: pq.abc.PGresult, columns: list[str]) -> list[Row]:
        transformer.set_pgresult(result, format=_BINARY)
        try:
            return transformer.load_rows(
                0, result.ntuples, lambda values: dict(zip(columns, values, strict=True))
            )
        finally:
            transformer.set_pgresult(None)


async def _next_result(
    pgconn: pq.abc.PGconn, error: psycopg.Error | None
) -> pq.abc.PGresult:
    """The pipeline's next result, read from the server as it comes; OperationalError
    (naming ``error``, the first refusal so far, if any) if the connection is lost."""
    while True:
        while pgconn.is_busy():
            # The socket asked anew each time: libpq closes it when the server goes.
            await trio.lowlevel.wait_readable(pgconn.socket)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is not None:
            return result
        # The end of one statement's results, or of the connection: no Sync will come.
        if pgconn.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError(_lost(pgconn, error))


async def _flush(pgconn: pq.abc.PGconn) -> None:
    """Sends what libpq holds. While the socket is full, what the server answers is read
    too (libpq's rule for PQflush), so neither side waits for the other to read."""
    while pgconn.flush():
        await _readable_or_writable(pgconn.socket)
        pgconn.consume_input()


async def _readable_or_writable(socket: int) -> None:
    async with trio.open_nursery() as nursery:

        async def until(wait: Callable[[int], Any]) -> None:
            await wait(socket)
            nursery.cancel_scope.cancel()

        nursery.start_soon(until, trio.lowlevel.wait_writable)
        nursery.start_soon(until, trio.lowlevel.wait_readable)


def _lost(pgconn: pq.abc.PGconn, error: psycopg.Error | None) -> str:
    if error is not None:
        return str(error)
    message = pgconn.error_message.decode("utf-8", "replace").strip()
    return message or "the connection to the server was lost"


def _rank(write: Write) -> int:
    return write.rank
