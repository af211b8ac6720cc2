"""A whole system started for one benchmark with `orderflow up`, and removed afterwards.

It gets its own data folder, stream prefix and free HTTP and SMTP ports, and, unless a
database URL is given, a scratch database created beside the configured one. Stopping it
ends every process it started, drops the scratch database, deletes its stream keys and
removes its data folder.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.embedded import tcp_answers
from shared.tiers import GROUP_NAMES

READY_TIMEOUT_SECONDS = 120.0  # migrations plus seven Python processes starting on two cores
READY_POLL_SECONDS = 0.25
# The supervisor gives its children 7 s after SIGTERM; this covers that and its own exit.
STOP_TIMEOUT_SECONDS = 20.0
LOG_TAIL_CHARS = 3000
SERVICE_NAMES = frozenset({"payments", "inventory", "notifications", "analytics"})


class SystemStartError(RuntimeError):
    """The benchmark's own system did not become ready."""


@dataclass
class SystemOptions:
    latency: str = "none"
    consumer_base: int | None = None
    database_url: str | None = None  # None: a scratch database beside `default_database_url`
    redis_url: str | None = None  # None: `default_redis_url`
    default_database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    default_redis_url: str = "redis://127.0.0.1:6379/0"
    admin_token: str = ""
    log_path: Path | None = None


@dataclass
class LocalSystem:
    """`orderflow up` as a child process; use `start()` and `stop()`, or `async with`."""

    options: SystemOptions
    http_port: int = 0
    stream_prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}:")
    data_dir: Path | None = None
    process: asyncio.subprocess.Process | None = None
    database_url: str | None = None
    redis_url: str | None = None
    scratch_database: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def __aenter__(self) -> "LocalSystem":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
        self.http_port = free_port()
        env = dict(os.environ)
        env.update(
            {
                "ORDERFLOW_HTTP_HOST": "127.0.0.1",
                "ORDERFLOW_HTTP_PORT": str(self.http_port),
                "ORDERFLOW_PUBLIC_URL": self.url,
                "ORDERFLOW_SMTP_PORT": str(free_port()),
                "ORDERFLOW_DATA_DIR": str(self.data_dir),
                "ORDERFLOW_STREAM_PREFIX": self.stream_prefix,
                "ORDERFLOW_SIMULATED_LATENCY": self.options.latency,
                "ORDERFLOW_LOG_LEVEL": "WARNING",
                "ORDERFLOW_LOG_FORMAT": "json",
                # Fixed metrics ports would clash with another system on this machine.
                "ORDERFLOW_METRICS_PORT": "0",
            }
        )
        if self.options.consumer_base is not None:
            env["ORDERFLOW_CONSUMER_BASE"] = str(self.options.consumer_base)
        env.update(await self._servers())
        log_path = self.options.log_path or self.data_dir / "up.log"
        # NOTE: the system runs in a session of its own, so only this object's stop() ends
        # it. A bench killed with SIGKILL leaves it running; SIGINT and SIGTERM do not.
        with log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli",
                "up",
                cwd=self.data_dir,
                env=env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await self._wait_ready(log_path)

    async def _servers(self) -> dict[str, str]:
        """Return the ORDERFLOW_ URLs of Redis and PostgreSQL for the child environment.

        A server that does not accept connections is left out, so `orderflow up` starts an
        embedded one inside the data folder, which `stop()` removes.
        """
        urls: dict[str, str] = {}
        redis_url = self.options.redis_url or self.options.default_redis_url
        if self.options.redis_url or _answers(redis_url, 6379):
            urls["ORDERFLOW_REDIS_URL"] = self.redis_url = redis_url
        if self.options.database_url:
            urls["ORDERFLOW_DATABASE_URL"] = self.database_url = self.options.database_url
        elif _answers(self.options.default_database_url, 5432):
            self.scratch_database = f"orderflow_bench_{uuid.uuid4().hex[:12]}"
            await _run_sql(
                self.options.default_database_url, f'CREATE DATABASE "{self.scratch_database}"'
            )
            self.database_url = _with_database(
                self.options.default_database_url, self.scratch_database
            )
            urls["ORDERFLOW_DATABASE_URL"] = self.database_url
        return urls

    async def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        headers = _auth_headers(self.options.admin_token)
        async with httpx.AsyncClient(base_url=self.url, timeout=5, headers=headers) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    raise SystemStartError(
                        f"orderflow up exited with code {self.process.returncode} before it "
                        f"was ready; its output ends with:\n{_tail(log_path)}"
                    )
                if await _groups_ready(client):
                    return
                await asyncio.sleep(READY_POLL_SECONDS)
        raise SystemStartError(
            f"the system at {self.url} was not ready with every consumer group within "
            f"{READY_TIMEOUT_SECONDS:.0f} s; the output of orderflow up ends with:\n"
            f"{_tail(log_path)}"
        )

    def processes(self) -> list[psutil.Process]:
        """Return the supervisor and every process below it that is still running."""
        if self.process is None or self.process.returncode is not None:
            return []
        try:
            supervisor = psutil.Process(self.process.pid)
            return [supervisor, *supervisor.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pause_services(self) -> None:
        """Suspend the four services (SIGSTOP), so only intake uses the CPU."""
        self._signal_services(signal.SIGSTOP)

    def resume_services(self) -> None:
        self._signal_services(signal.SIGCONT)

    def _signal_services(self, signum: int) -> None:
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                arguments = process.cmdline()
                if "service" in arguments and arguments[-1] in SERVICE_NAMES:
                    process.send_signal(signum)

    async def stop(self) -> None:
        """Stop every process, then remove the scratch database, stream keys and data folder."""
        self.resume_services()
        await self._stop_processes()
        if self.scratch_database is not None:
            await _run_sql(
                self.options.default_database_url,
                f'DROP DATABASE IF EXISTS "{self.scratch_database}" WITH (FORCE)',
            )
            self.scratch_database = None
        if self.redis_url is not None:
            await delete_keys(self.redis_url, self.stream_prefix)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    async def _stop_processes(self) -> None:
        if self.process is None:
            return
        started = self.processes()
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        # Children run in sessions of their own, so a killed supervisor can leave them behind.
        leftovers = [p for p in started if _alive(p)]
        for leftover in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        await asyncio.to_thread(psutil.wait_procs, leftovers, timeout=5)
        self.process = None


async def _groups_ready(client: httpx.AsyncClient) -> bool:
    """Return True once the gateway is ready and every service has created its group.

    Consumers show up in Redis only after their first entry (Redis 7.0 does not list a
    consumer whose first XREADGROUP blocks on an empty stream), so groups are the signal.
    """
    try:
        ready = await client.get("/ready")
        if ready.status_code != 200:
            return False
        streams = (await client.get("/api/v1/admin/streams")).json()["streams"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    groups = {group["name"] for tier in streams for group in tier["groups"]}
    return set(GROUP_NAMES.values()) <= groups


async def delete_keys(redis_url: str, prefix: str) -> None:
    """Delete every Redis key that starts with `prefix`."""
    client = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    except (RedisError, OSError):
        pass
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _auth_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    return tcp_answers(parts.hostname or "127.0.0.1", parts.port or default_port)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _run_sql(database_url: str, statement: str) -> None:
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no output)"
