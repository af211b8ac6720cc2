"""Apply the Alembic migrations that ship inside the package."""

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_PATH = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Migrate the database to the newest schema; safe to run again."""
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_to_head_async(database_url: str) -> None:
    # env.py starts its own event loop, so it runs in a worker thread.
    await asyncio.to_thread(upgrade_to_head, database_url)
