"""The notifications service: order e-mails and invoice PDFs (default tier)."""

from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications.handlers import NotificationsContext, handle_email, handle_invoice
from shared.service import ServiceRuntime, WorkBinding
from shared.settings import Settings
from shared.tiers import WorkType


def create_runtime(settings: Settings) -> ServiceRuntime:
    def bind(sessions: async_sessionmaker[AsyncSession]) -> list[WorkBinding]:
        ctx = NotificationsContext(
            sessions=sessions,
            latency=settings.simulated_latency,
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            sender=settings.mail_from,
            invoice_folder=settings.invoice_path,
        )
        return [
            WorkBinding(
                WorkType.EMAIL,
                frozenset({"OrderCreated", "PaymentFailed"}),
                partial(handle_email, ctx),
            ),
            WorkBinding(
                WorkType.INVOICE, frozenset({"OrderCreated"}), partial(handle_invoice, ctx)
            ),
        ]

    return ServiceRuntime("notifications", settings, bind)
