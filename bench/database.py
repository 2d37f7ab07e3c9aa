"""The journal's PostgreSQL server for a run (``--journal postgresql``, and the scaling
scenario): a throw-away server of the bench's own (``switch/devtools/postgresql.py``: fsync on, in
a temporary folder, stopped at the end), or the one ``--dsn`` names. Either way every
switch the run starts gets a database of its own in it, empty, as a switch's journal
starts; those made on a ``--dsn`` server are dropped at the end.

The server's CPU (the postmaster and every backend below it) is the database's side of
a sale, measured apart from the switch's: for a server on this machine, found by its
postmaster's pid (from its data folder, or for ``--dsn`` from a backend's parent).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import psycopg
import trio
from psycopg.conninfo import make_conninfo

from bench.services import ServiceFailed
from switch.devtools.postgresql import PostgresServer, ServerUnavailable

DROP_TIMEOUT_S: Final = 30.0


class JournalServer:
    """A PostgreSQL server the run's switches keep their journals in."""

    def __init__(self, dsn: str, postmaster_pid: int | None, *, owned: bool) -> None:
        self.dsn = dsn
        """A database of the server to connect to for CREATE DATABASE."""
        self.postmaster_pid = postmaster_pid
        """None when the server is not on this machine (its CPU is not measured)."""
        self.owned = owned
        """The bench started it (and removes it whole at the end)."""
        self.created: list[str] = []
        self._numbers = itertools.count(1)

    async def new_database(self, label: str) -> str:
        """A new empty database for the switch ``label``; its DSN."""
        name = f"bench_{os.getpid()}_{next(self._numbers)}_{re.sub(r'[^a-z0-9]', '_', label)}"
        await trio.to_thread.run_sync(self._execute, f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_conninfo(self.dsn, dbname=name)

    async def drop_created(self) -> None:
        """Drops the databases made on a server the bench did not start."""
        with trio.CancelScope(shield=True), trio.move_on_after(DROP_TIMEOUT_S):
            for name in self.created:
                with contextlib.suppress(psycopg.Error):
                    await trio.to_thread.run_sync(
                        self._execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
                    )
        self.created.clear()

    def _execute(self, statement: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(statement.encode())


def _parent_pid(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text[text.rindex(")") + 2 :].split()[1])
    return None


def _is_postgres(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster")
    return False


def local_postmaster(dsn: str) -> int | None:
    """The postmaster of the server ``dsn`` names, when it runs on this machine: the
    parent of the backend that answers (``pg_backend_pid()``), if both are postgres
    processes here; else None."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(b"SELECT pg_backend_pid()").fetchone()
    backend = int(row[0]) if row is not None else 0
    parent = _parent_pid(backend) if _is_postgres(backend) else None
    return parent if parent is not None and _is_postgres(parent) else None


@contextlib.asynccontextmanager
async def journal_server(dsn: str | None) -> AsyncIterator[JournalServer]:
    """The server named by ``dsn``, or one started for the run (installed if missing and
    allowed: see switch/devtools/postgresql.py); stopped, or its databases dropped, on exit."""
    if dsn is not None:
        postmaster = await trio.to_thread.run_sync(local_postmaster, dsn)
        server = JournalServer(dsn, postmaster, owned=False)
        try:
            yield server
        finally:
            await server.drop_created()
        return
    own = PostgresServer(fsync=True)  # the bench measures what a durable commit costs
    try:
        try:
            await trio.to_thread.run_sync(own.start)
        except ServerUnavailable as exc:
            raise ServiceFailed(f"the journal's PostgreSQL server: {exc}") from exc
        pid = int((own.data_dir / "postmaster.pid").read_text().split()[0])
        yield JournalServer(own.dsn(), pid, owned=True)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(own.stop)
