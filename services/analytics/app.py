"""The analytics service: sales aggregates and warehouse shipping (low tier)."""

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.analytics.handlers import AnalyticsContext, handle_analytics, handle_warehouse
from shared.service import ServiceRuntime, WorkBinding
from shared.settings import Settings
from shared.tiers import WorkType


def create_runtime(settings: Settings) -> ServiceRuntime:
    def bind(sessions: async_sessionmaker[AsyncSession]) -> list[WorkBinding]:
        ctx = AnalyticsContext(sessions=sessions, latency=settings.simulated_latency)
        return [
            WorkBinding(
                WorkType.ANALYTICS, frozenset({"OrderCreated"}), partial(handle_analytics, ctx)
            ),
            WorkBinding(
                WorkType.WAREHOUSE,
                frozenset({"OrderReadyToShip"}),
                partial(handle_warehouse, ctx),
            ),
        ]

    return ServiceRuntime("analytics", settings, bind)
