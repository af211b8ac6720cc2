"""The payments service: charges orders (critical tier) and refunds cancelled ones."""

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.payments.handlers import PaymentsContext, handle
from services.payments.provider import SimulatedProvider
from shared.service import ServiceRuntime, WorkBinding
from shared.settings import Settings
from shared.tiers import WorkType


def create_runtime(settings: Settings) -> ServiceRuntime:
    def bind(sessions: async_sessionmaker[AsyncSession]) -> list[WorkBinding]:
        ctx = PaymentsContext(
            sessions=sessions,
            provider=SimulatedProvider(settings.payment_limit),
            latency=settings.simulated_latency,
        )
        accepts = frozenset({"OrderCreated", "OrderCancelled"})
        return [WorkBinding(WorkType.PAYMENT, accepts, partial(handle, ctx))]

    return ServiceRuntime("payments", settings, bind)
