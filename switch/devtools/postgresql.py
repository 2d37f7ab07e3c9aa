"""A local PostgreSQL server for the tests, the journal bench and the demo: found on the
machine, installed from Debian's ``postgresql`` package if it is missing and we may,
initialised by an unprivileged user, started on a free loopback port and stopped at
the end. The tests' and the bench's is thrown away with its temporary folder; the
demo's is a cluster in a folder of its own, kept between runs.

Nothing here is the switch's: the switch only ever gets a DSN.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import psycopg

from switch.devtools.apt import NotInstalled, apt_install

SERVER_START_TIMEOUT_S = 30
"""pg_ctl's wait for the server to accept connections (it takes about a second)."""
TEST_USER = "switchtest"
"""The unprivileged account that runs the server when we are root (initdb refuses root),
if the package's own ``postgres`` account is not there."""
SUPERUSER = "switch"
"""The database superuser initdb creates (trust authentication, loopback only)."""


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; says why, and what was tried."""


def find_bin_dir() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: Debian's newest under
    ``/usr/lib/postgresql``, else wherever PATH has ``pg_ctl``."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    for folder in versions:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        folder = Path(on_path).resolve().parent
        if (folder / "initdb").exists():
            return folder
    return None


def install_server() -> Path:
    """Installs Debian's ``postgresql`` (15 on bookworm) when it is missing; only as root
    with apt-get, as CI is on a fresh machine. ServerUnavailable says why not."""
    found = find_bin_dir()
    if found is not None:
        return found
    try:
        apt_install(
            "postgresql",
            why_missing="no PostgreSQL server binaries (initdb, pg_ctl) under "
            "/usr/lib/postgresql or on PATH",
        )
    except NotInstalled as exc:
        raise ServerUnavailable(str(exc)) from None
    found = find_bin_dir()
    if found is None:
        raise ServerUnavailable("postgresql was installed but initdb/pg_ctl are not found")
    return found


def _server_account() -> pwd.struct_passwd | None:
    """Who runs the server: ourselves unless root; as root the package's ``postgres``
    account, or ``switchtest``, created for it."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", TEST_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(TEST_USER)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """One server on a free loopback port, its data in ``folder``.

    Without ``folder`` a temporary one, removed at :meth:`stop` (the server killed:
    nothing in it is kept), and ``fsync`` off by default: the tests never pull the
    plug, and a database a test takes a few milliseconds less. The bench keeps fsync
    on, since it measures what a durable commit costs.

    With ``folder`` (the demo's) a persistent cluster: initialised the first time,
    started again on what it holds after, stopped cleanly (``pg_ctl stop -m fast``),
    and reached on TCP only (a unix socket's path has a length limit a deep folder
    exceeds).
    """

    def __init__(self, *, fsync: bool = False, folder: Path | None = None) -> None:
        self.fsync = fsync
        self.persistent = folder is not None
        self.bin_dir: Path | None = None
        self.folder: Path | None = folder
        self.port = 0
        self._account: pwd.struct_passwd | None = None
        self._databases = count(1)
        self._started = False

    @property
    def data_dir(self) -> Path:
        assert self.folder is not None, "server not started"
        return self.folder / "data"

    def start(self) -> None:
        """Installs if need be, initialises and starts; ServerUnavailable if it cannot."""
        self.bin_dir = install_server()
        self._account = _server_account()
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="switch-pg-", dir=self._temp_base()))
        else:
            self._prepare_own_folder(self.folder)
        if self._account is not None:
            os.chown(self.folder, self._account.pw_uid, self._account.pw_gid)
        self.port = _free_port()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb", "--pgdata", str(self.data_dir), "--username", SUPERUSER,
                "--auth", "trust", "--encoding", "UTF8", "--locale", "C",
                *([] if self.persistent else ["--no-sync"]), "--no-instructions",
            )  # fmt: skip
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "''" if self.persistent else str(self.folder),
            "fsync": "on" if self.fsync else "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
        }
        options = " ".join(f"-c {name}={value}" for name, value in settings.items())
        self._started = True  # from here on stop() stops it, even if the start fails
        self._run(
            "pg_ctl", "--pgdata", str(self.data_dir), "--log", str(self.folder / "server.log"),
            "--options", options, "--wait", "--timeout", str(SERVER_START_TIMEOUT_S),
            "--silent", "start",
        )  # fmt: skip

    def _prepare_own_folder(self, folder: Path) -> None:
        """A persistent cluster's folder: made if missing, reachable by the server's
        account, and not the data of a server running now."""
        folder.mkdir(parents=True, exist_ok=True)
        if self._account is not None:
            closed = [
                parent
                for parent in folder.resolve().parents
                if not parent.stat().st_mode & 0o001
                and parent.stat().st_uid != self._account.pw_uid
            ]
            if closed:
                raise ServerUnavailable(
                    f"{folder}: the server's account {self._account.pw_name} (initdb refuses "
                    f"root) cannot reach it: {closed[0]} is closed to others; choose a folder "
                    "it can reach"
                )
        pid_file = folder / "data" / "postmaster.pid"
        if pid_file.exists() and self._status() == 0:
            pid = pid_file.read_text().split("\n", 1)[0]
            raise ServerUnavailable(
                f"{folder}: a PostgreSQL server already runs on it (pid {pid}): another demo's, "
                f"or one left by a demo that was killed (stop it: kill {pid})"
            )

    def _status(self) -> int:
        """``pg_ctl status``: 0 while a server runs on the data folder."""
        assert self.bin_dir is not None
        account = self._account
        return subprocess.run(
            [str(self.bin_dir / "pg_ctl"), "--pgdata", str(self.data_dir), "status"],
            capture_output=True,
            timeout=SERVER_START_TIMEOUT_S,
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
            extra_groups=None if account is None else [],
            check=False,
        ).returncode

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection ended, the server back when this
        returns (what an operator's restart or a failover does to the switch)."""
        assert self.folder is not None, "server not started"
        # --log as at start: the server's output is not left on our pipes (it would hold
        # them open, and this call waiting, for as long as the server runs).
        self._run(
            "pg_ctl", "--pgdata", str(self.data_dir), "--log", str(self.folder / "server.log"),
            "--mode", "fast", "--wait", "--timeout", str(SERVER_START_TIMEOUT_S), "--silent",
            "restart",
        )  # fmt: skip

    def _temp_base(self) -> str | None:
        """Where the server's folder goes: the usual temporary folder, unless the server's
        account could not reach it (a TMPDIR private to root), then /tmp."""
        base = Path(tempfile.gettempdir())
        if self._account is None:
            return None
        reachable = all(folder.stat().st_mode & 0o001 for folder in (base, *base.parents))
        return None if reachable else "/tmp"

    def stop(self) -> None:
        """A temporary server is killed and its folder removed; a persistent one is
        shut down cleanly (its sessions ended, its data written) and kept."""
        if self.folder is None:
            return
        if self.persistent:
            if self._started and (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "--pgdata", str(self.data_dir), "--mode", "fast",
                          "--wait", "--silent", "stop")  # fmt: skip
            self._started = False
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "--pgdata", str(self.data_dir), "--mode", "immediate", "stop")
        # A test session's databases are some hundred thousand small files: a process
        # of its own removes them, so that the session's end does not wait a minute.
        subprocess.Popen(
            ["rm", "-rf", "--", str(self.folder)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.folder = None

    def running(self) -> bool:
        """Whether a server runs on the data folder now."""
        return self.folder is not None and self.bin_dir is not None and self._status() == 0

    def _run(self, program: str, *arguments: str) -> None:
        assert self.bin_dir is not None
        account = self._account
        try:
            subprocess.run(
                [str(self.bin_dir / program), *arguments],
                check=True,
                capture_output=True,
                text=True,
                timeout=SERVER_START_TIMEOUT_S + 10,
                user=None if account is None else account.pw_uid,
                group=None if account is None else account.pw_gid,
                extra_groups=None if account is None else [],
                cwd=self.folder,
            )
        except subprocess.CalledProcessError as exc:
            log_file = self.folder / "server.log" if self.folder else None
            server_log = log_file.read_text()[-1000:] if log_file and log_file.exists() else ""
            raise ServerUnavailable(
                f"{program} failed ({exc.returncode}): {exc.stderr.strip()[-1000:]} {server_log}"
            ) from exc

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def create_database(self, template: str | None = None) -> str:
        """A new empty database, so that each test starts from nothing, or a copy of the
        database of DSN ``template`` (to which nothing may be connected); its DSN."""
        name = f"test_{os.getpid()}_{next(self._databases)}"
        copied = ""
        if template is not None:
            copied = f' TEMPLATE "{psycopg.conninfo.conninfo_to_dict(template)["dbname"]}"'
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"{copied}')
        return self.dsn(name)

    def ensure_database(self, name: str) -> str:
        """The database ``name``, made if it is not there yet (what it holds is kept);
        its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if found is None:
                connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


@contextlib.contextmanager
def running_server(*, fsync: bool = False) -> Iterator[PostgresServer]:
    server = PostgresServer(fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        server.stop()
