"""The inventory service: reserves and releases stock (high tier)."""

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.inventory.handlers import InventoryContext, handle
from shared.service import ServiceRuntime, WorkBinding
from shared.settings import Settings
from shared.tiers import WorkType


def create_runtime(settings: Settings) -> ServiceRuntime:
    def bind(sessions: async_sessionmaker[AsyncSession]) -> list[WorkBinding]:
        ctx = InventoryContext(sessions=sessions, latency=settings.simulated_latency)
        accepts = frozenset({"OrderCreated", "PaymentFailed", "OrderCancelled"})
        return [WorkBinding(WorkType.INVENTORY, accepts, partial(handle, ctx))]

    return ServiceRuntime("inventory", settings, bind)
