"""The embedded Valkey and PostgreSQL servers, started for real in a temporary directory."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from shared.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    tcp_answers,
)

# A generous limit: the first PostgreSQL start runs initdb, and some tests start a server twice.
pytestmark = pytest.mark.timeout(120)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SERVER_CLASSES = [EmbeddedRedis, EmbeddedPostgres]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_tree_pids(server: EmbeddedRedis | EmbeddedPostgres) -> set[int]:
    """Return the pids of the server process and all its descendants."""
    assert server._process is not None
    main = psutil.Process(server._process.pid)
    return {main.pid, *(child.pid for child in main.children(recursive=True))}


def running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
def data_root() -> Iterator[Path]:
    """Provide a fresh directory for server data, outside pytest's tmp_path.

    As root, PostgreSQL runs as another account that must traverse every parent of its data
    directory. Each pytest session that starts resets pytest's base directory to mode 0700,
    which would lock that account out in the middle of a concurrent session's test.
    """
    root = Path(tempfile.mkdtemp(prefix="orderflow-embedded-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_server(data_root: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_root / "redis", port=free_port())
    yield server
    server.stop()


@pytest.fixture
def postgres_server(data_root: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(data_root / "postgres", port=free_port())
    yield server
    server.stop()


def test_tcp_answers_true_when_port_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        assert tcp_answers("127.0.0.1", listener.getsockname()[1])


def test_tcp_answers_false_when_port_closed() -> None:
    assert not tcp_answers("127.0.0.1", free_port())


def test_redis_serves_commands_when_started(redis_server: EmbeddedRedis) -> None:
    url = redis_server.start()

    assert url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(url)
    try:
        client.set("embedded-test:greeting", "hello")
        assert client.get("embedded-test:greeting") == b"hello"
    finally:
        client.close()


def test_redis_keeps_keys_when_restarted(redis_server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(redis_server.start())
    try:
        client.xadd("embedded-test:stream", {"order_id": "ORD-1"})
    finally:
        client.close()
    redis_server.stop()

    client = redis.Redis.from_url(redis_server.start())
    try:
        entries = client.xrange("embedded-test:stream")
    finally:
        client.close()

    assert entries is not None
    assert [fields for _, fields in entries] == [{b"order_id": b"ORD-1"}]


async def test_postgres_serves_queries_when_started(
    postgres_server: EmbeddedPostgres,
) -> None:
    url = postgres_server.start()

    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres_server.port}/postgres"
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("CREATE TABLE orders (id text PRIMARY KEY, total numeric)")
        await connection.execute("INSERT INTO orders VALUES ('ORD-1', 1250.00)")
        rows = await connection.fetch("SELECT id, total::text FROM orders")
    finally:
        await connection.close()

    assert [tuple(row) for row in rows] == [("ORD-1", "1250.00")]


async def test_postgres_keeps_rows_when_restarted(
    postgres_server: EmbeddedPostgres,
) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(postgres_server.start()))
    try:
        await connection.execute("CREATE TABLE orders (id text PRIMARY KEY)")
        await connection.execute("INSERT INTO orders VALUES ('ORD-1')")
    finally:
        await connection.close()
    postgres_server.stop()

    connection = await asyncpg.connect(asyncpg_dsn(postgres_server.start()))
    try:
        order_ids = await connection.fetchval("SELECT array_agg(id) FROM orders")
    finally:
        await connection.close()

    assert order_ids == ["ORD-1"]


@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_server_leaves_no_process_when_stopped(
    server_class: type[EmbeddedRedis | EmbeddedPostgres], data_root: Path
) -> None:
    server = server_class(data_root / server_class.name, port=free_port())
    server.start()
    port = server.port
    assert port is not None
    pids = server_tree_pids(server)

    server.stop()

    assert not tcp_answers("127.0.0.1", port)
    assert running(pids) == set()
    assert server.port is None
    own_children = {child.pid for child in psutil.Process().children(recursive=True)}
    assert own_children & pids == set()


@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_server_replaces_leftover_when_parent_killed(
    server_class: type[EmbeddedRedis | EmbeddedPostgres], data_root: Path
) -> None:
    data_dir = data_root / server_class.name
    # A parent that exits without stopping its server, as a SIGKILLed `orderflow up` would.
    crashing_parent = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from shared.embedded import {server_class.__name__}
        server = {server_class.__name__}(Path(sys.argv[1]))
        server.start()
        print(server._process.pid, server.port, flush=True)
        os._exit(0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", crashing_parent, str(data_dir)],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    leftover_pid, leftover_port = (int(value) for value in result.stdout.split()[-2:])
    leftover = psutil.Process(leftover_pid)
    server = server_class(data_dir, port=free_port())
    try:
        assert tcp_answers("127.0.0.1", leftover_port)

        server.start()

        assert running({leftover_pid}) == set()
        assert not tcp_answers("127.0.0.1", leftover_port)
        assert server.port is not None
        assert tcp_answers("127.0.0.1", server.port)
    finally:
        server.stop()
        if leftover.is_running():
            leftover.kill()


@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_server_raises_when_port_in_use(
    server_class: type[EmbeddedRedis | EmbeddedPostgres], data_root: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        server = server_class(data_root / server_class.name, port=port)

        with pytest.raises(EmbeddedServerError, match=f"Port {port} .* is in use"):
            server.start()

    assert server.port is None


def test_redis_uses_default_port_when_free(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default_port = free_port()
    monkeypatch.setattr(EmbeddedRedis, "default_port", default_port)
    server = EmbeddedRedis(data_root / "redis")
    try:
        url = server.start()
    finally:
        server.stop()

    assert url == f"redis://127.0.0.1:{default_port}/0"


def test_redis_avoids_default_port_when_busy(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy_port = listener.getsockname()[1]
        monkeypatch.setattr(EmbeddedRedis, "default_port", busy_port)
        server = EmbeddedRedis(data_root / "redis")
        try:
            server.start()
            port = server.port
        finally:
            server.stop()

    assert port is not None
    assert port != busy_port


def test_postgres_error_names_log_when_crashing(data_root: Path) -> None:
    server = EmbeddedPostgres(data_root / "postgres", port=free_port())
    server.start()
    server.stop()
    # A cluster from an unknown major version makes the postmaster exit at once.
    (server.pgdata / "PG_VERSION").write_text("99\n")

    with pytest.raises(EmbeddedServerError) as raised:
        server.start()

    message = str(raised.value)
    assert "exited with code" in message
    assert str(server.data_dir) in message
    assert str(server.log_path) in message
    assert "incompatible" in message
    assert server.port is None
