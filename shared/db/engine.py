"""Engine and session factory; each process builds them once at startup."""

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(database_url: str, pool_size: int = 10) -> AsyncEngine:
    """Build the process's engine, which opens at most `pool_size` connections."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=0,
        # No pre-ping: it costs a round trip per checkout. A connection that died with a
        # database restart fails its first statement, which callers treat as an outage.
        pool_recycle=1800,
        pool_timeout=10,
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
