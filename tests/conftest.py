"""Fixtures for real Redis and PostgreSQL.

The servers on the default local ports are used when they respond; otherwise embedded ones
are started for the test session. Each session gets its own database, dropped at the end,
and each test its own stream prefix, whose keys are deleted after the test.
"""

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.engine import make_engine, make_session_factory
from shared.db.migrate import upgrade_to_head
from shared.embedded import EmbeddedPostgres, EmbeddedRedis, tcp_answers
from shared.settings import Settings

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

# Tables the tests write; products is reseeded instead, since the migration fills it.
EFFECT_TABLES = (
    "orders",
    "order_items",
    "order_steps",
    "outbox",
    "processed_events",
    "stock_reservations",
    "payments",
    "emails",
    "invoices",
    "analytics_orders",
    "analytics_daily",
    "analytics_products",
    "shipments",
)


def _plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def server_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="orderflow-tests-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(server_dir: Path) -> Iterator[str]:
    url = os.environ.get("ORDERFLOW_TEST_REDIS_URL")
    if url:
        yield url
        return
    if tcp_answers("127.0.0.1", 6379):
        yield LOCAL_REDIS_URL
        return
    server = EmbeddedRedis(server_dir / "redis", port=None)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def admin_database_url(server_dir: Path) -> Iterator[str]:
    url = os.environ.get("ORDERFLOW_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if tcp_answers("127.0.0.1", 5432):
        yield LOCAL_POSTGRES_URL
        return
    server = EmbeddedPostgres(server_dir / "postgres", port=None)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def database_url(admin_database_url: str) -> Iterator[str]:
    """A fresh database for this test session, migrated to the newest schema."""
    name = f"orderflow_test_{uuid.uuid4().hex[:12]}"
    base, _, _ = admin_database_url.rpartition("/")

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(_plain_dsn(admin_database_url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = f"{base}/{name}"
    upgrade_to_head(url)
    yield url
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def stream_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def redis(redis_url: str, stream_prefix: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{stream_prefix}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(database_url, pool_size=5)
    yield make_session_factory(engine)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {', '.join(EFFECT_TABLES)} CASCADE"))
        await connection.execute(text("UPDATE products SET stock = 1000000000"))
    await engine.dispose()


@pytest.fixture
def settings(database_url: str, redis_url: str, stream_prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        stream_prefix=stream_prefix,
        data_dir=tmp_path / "data",
        retry_base_seconds=0.05,
        retry_cap_seconds=0.2,
        reclaim_idle_seconds=2.0,
        handler_timeout_seconds=1.5,
        stream_block_ms=100,
    )
