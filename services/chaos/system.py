"""The system under test: its own Redis and PostgreSQL, and every orderflow process.

Everything runs from one temporary folder: the embedded servers' data, the gateway's mail
and invoice folders, and one log file per process. Each process runs in its own session,
so a Ctrl-C in the terminal reaches only `orderflow chaos`, which then stops them all.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import asyncpg
import httpx
from redis.asyncio import Redis

from shared.db.migrate import upgrade_to_head
from shared.embedded import LOOPBACK_HOST, EmbeddedPostgres, EmbeddedRedis
from shared.streams.replies import as_text
from shared.tiers import GROUP_NAMES, TierMap, WorkType

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
CHILD_GRACE_SECONDS = 8.0
# `orderflow up` restarts a child that exited for the first time after this long.
RESTART_DELAY_SECONDS = 0.5
WATCH_INTERVAL_SECONDS = 0.1
READY_TIMEOUT_SECONDS = 60.0

# A few products get little stock, so some orders run out of it and are cancelled.
LOW_STOCK_PRODUCTS = tuple(f"prod-{index}" for index in range(5))
LOW_STOCK_UNITS = 40
# Eight processes, each with a pool of up to twice ORDERFLOW_DATABASE_POOL_SIZE, need more
# than PostgreSQL's default of 100 connections.
POSTGRES_MAX_CONNECTIONS = 300
# Orders above this total are declined by the simulated payment provider.
PAYMENT_LIMIT = "4000.00"

# Process name -> `orderflow` arguments. Payments runs twice, so its group has two members.
PROCESS_COMMANDS: dict[str, tuple[str, ...]] = {
    "smtp": ("smtp-catcher",),
    "gateway": ("gateway",),
    "relay": ("relay",),
    "payments-1": ("service", "payments"),
    "payments-2": ("service", "payments"),
    "inventory": ("service", "inventory"),
    "notifications": ("service", "notifications"),
    "analytics": ("service", "analytics"),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def plain_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass
class ChildProcess:
    """One orderflow process; the watcher restarts it whenever it exits."""

    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kill_requested: bool = False
    restart_at: float | None = None
    unexpected_exits: list[int] = field(default_factory=list)
    log_file: IO[bytes] | None = None


class ChaosSystem:
    """Starts, breaks, restarts and finally stops every server and process of one run."""

    def __init__(self, root: Path, timings: dict[str, str]) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_dir = root / "logs"
        self.redis_server = EmbeddedRedis(root / "redis", port=free_port())
        self.postgres_server = EmbeddedPostgres(root / "postgres", port=free_port())
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.timings = timings
        self.tiers = TierMap()
        self.redis_url = ""
        self.database_url = ""
        self.initial_stock: dict[str, int] = {}
        self.children = {
            name: ChildProcess(
                name,
                [sys.executable, "-m", "services.cli", *command],
                self.log_dir / f"{name}.log",
            )
            for name, command in PROCESS_COMMANDS.items()
        }
        self._watching = False

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.http_port}"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def invoice_dir(self) -> Path:
        return self.data_dir / "invoices"

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url, socket_timeout=10, socket_connect_timeout=2)

    async def read_stream(self, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Return every entry of `stream`, oldest first."""
        client = self.redis()
        try:
            entries = await client.xrange(stream)
        finally:
            await client.aclose()
        return cast(list[tuple[bytes, dict[bytes, bytes]]], entries or [])

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ORDERFLOW_")}
        env.update(self.timings)
        env.update(
            {
                "ORDERFLOW_REDIS_URL": self.redis_url,
                "ORDERFLOW_DATABASE_URL": self.database_url,
                "ORDERFLOW_HTTP_HOST": LOOPBACK_HOST,
                "ORDERFLOW_HTTP_PORT": str(self.http_port),
                "ORDERFLOW_SMTP_HOST": LOOPBACK_HOST,
                "ORDERFLOW_SMTP_PORT": str(self.smtp_port),
                "ORDERFLOW_DATA_DIR": str(self.data_dir),
                "ORDERFLOW_PAYMENT_LIMIT": PAYMENT_LIMIT,
                "ORDERFLOW_METRICS_PORT": "0",
                "ORDERFLOW_OTLP_ENDPOINT": "",
                "ORDERFLOW_LOG_FORMAT": "json",
                "ORDERFLOW_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # -- starting --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start both servers, migrate, seed the stock, start every process, wait until ready."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis_url = await asyncio.to_thread(self.redis_server.start)
        self.database_url = await asyncio.to_thread(self.postgres_server.start)
        await self._raise_connection_limit()
        await asyncio.to_thread(upgrade_to_head, self.database_url)
        await self._seed_stock()
        for child in self.children.values():
            self._spawn(child)
        self._watching = True
        await self._wait_until_ready()

    async def _raise_connection_limit(self) -> None:
        """Set max_connections, which takes effect only after a restart."""
        connection = await asyncpg.connect(plain_dsn(self.database_url))
        try:
            await connection.execute(
                f"ALTER SYSTEM SET max_connections = {POSTGRES_MAX_CONNECTIONS}"
            )
        finally:
            await connection.close()
        await self.stop_postgres()
        await self.start_postgres()

    async def _seed_stock(self) -> None:
        connection = await asyncpg.connect(plain_dsn(self.database_url))
        try:
            await connection.execute(
                "UPDATE products SET stock = $1 WHERE id = ANY($2::text[])",
                LOW_STOCK_UNITS,
                list(LOW_STOCK_PRODUCTS),
            )
            rows = await connection.fetch("SELECT id, stock FROM products")
        finally:
            await connection.close()
        self.initial_stock = {row["id"]: int(row["stock"]) for row in rows}

    def _spawn(self, child: ChildProcess) -> None:
        if child.log_file is None:
            child.log_file = child.log_path.open("ab")
        child.process = subprocess.Popen(
            child.args,
            stdin=subprocess.DEVNULL,
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            cwd=REPOSITORY_ROOT,
            env=self.environment(),
            start_new_session=True,
        )
        child.starts += 1
        child.kill_requested = False
        child.restart_at = None

    async def _wait_until_ready(self) -> None:
        """Wait until the gateway is ready and every group has its consumers."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/ready")).status_code == 200 and (
                        await self.groups_ready()
                    ):
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the system was not ready within {READY_TIMEOUT_SECONDS:g} s; "
                        f"see the process logs in {self.log_dir}"
                    )
                await asyncio.sleep(0.2)

    async def groups_ready(self) -> bool:
        """Return whether every consumer group exists and has at least one consumer."""
        client = self.redis()
        try:
            for work in WorkType:
                stream = self.tiers.stream_of(work)
                groups = {
                    as_text(info["name"]): int(info["consumers"])
                    for info in await client.xinfo_groups(stream)
                }
                if groups.get(GROUP_NAMES[work], 0) == 0:
                    return False
        except Exception:  # a missing stream or an unreachable server means not ready
            return False
        finally:
            await client.aclose()
        return True

    # -- the watcher: a supervisor that restarts exited processes ----------------------------

    async def watch(self) -> None:
        """Restart every process that exits, as `orderflow up` would, until stopped."""
        while self._watching:
            now = time.monotonic()
            for child in self.children.values():
                self._check(child, now)
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)

    def _check(self, child: ChildProcess, now: float) -> None:
        if child.process is not None:
            code = child.process.poll()
            if code is None:
                return
            if not child.kill_requested:
                child.unexpected_exits.append(code)
            child.process = None
            child.restart_at = now + RESTART_DELAY_SECONDS
        if child.restart_at is not None and now >= child.restart_at:
            self._spawn(child)

    async def kill(self, name: str) -> int:
        """SIGKILL one process; the watcher restarts it. Return the killed pid."""
        child = self.children[name]
        process = child.process
        if process is None:
            raise RuntimeError(f"process {name} is not running, so it cannot be killed")
        child.kill_requested = True
        _signal_group(process, signal.SIGKILL)
        await asyncio.to_thread(process.wait, CHILD_GRACE_SECONDS)
        return process.pid

    async def wait_restarted(self, name: str, previous_starts: int, limit_seconds: float) -> bool:
        deadline = time.monotonic() + limit_seconds
        while time.monotonic() < deadline:
            child = self.children[name]
            if child.starts > previous_starts and child.process is not None:
                return True
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
        return False

    # -- server faults ---------------------------------------------------------------------

    async def restart_redis(self, keep_data: bool) -> None:
        """Stop Redis, delete its data unless `keep_data`, and start it on the same port."""
        await asyncio.to_thread(self.redis_server.stop)
        if not keep_data:
            data = self.redis_server.data_dir
            shutil.rmtree(data / "appendonlydir", ignore_errors=True)
            (data / "dump.rdb").unlink(missing_ok=True)
        await asyncio.to_thread(self.redis_server.start)

    async def stop_postgres(self) -> None:
        await asyncio.to_thread(self.postgres_server.stop)

    async def start_postgres(self) -> None:
        await asyncio.to_thread(self.postgres_server.start)

    # -- stopping --------------------------------------------------------------------------

    def shutdown(self) -> list[str]:
        """Stop every process, then both servers; return what could not be stopped cleanly.

        Safe to call more than once and after a failed start.
        """
        self._watching = False
        problems: list[str] = []
        running = [
            child
            for child in self.children.values()
            if child.process is not None and child.process.poll() is None
        ]
        for child in running:
            assert child.process is not None
            child.kill_requested = True
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + CHILD_GRACE_SECONDS
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                problems.append(f"{child.name} ignored SIGTERM for {CHILD_GRACE_SECONDS:g} s")
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(timeout=5)
        for child in self.children.values():
            if child.log_file is not None:
                child.log_file.close()
                child.log_file = None
        for server in (self.redis_server, self.postgres_server):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the rest; the caller reports it
                problems.append(f"stopping embedded {server.name} failed: {exc}")
        return problems


def _signal_group(process: "subprocess.Popen[bytes]", signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
