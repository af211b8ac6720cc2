"""Settings read from `ORDERFLOW_*` environment variables (see `.env.example`)."""

from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LatencyProfile(StrEnum):
    NONE = "none"
    DEMO = "demo"


class FaultInjection(BaseModel):
    """A testing aid that makes one consumer group's handler fail for chosen orders.

    With it set, that group's handler raises for every `OrderCreated` whose customer id
    starts with `customer_prefix`, so those events go through every retry to the dead-letter
    stream. `orderflow chaos` uses it; a deployment leaves it unset.
    """

    group: str = Field(pattern="^(payments|inventory|email|invoice|analytics|warehouse)$")
    customer_prefix: str = Field(min_length=1)


class Settings(BaseSettings):
    # An empty variable means the default, so a copied .env.example works as it is.
    model_config = SettingsConfigDict(
        env_prefix="ORDERFLOW_", extra="ignore", env_ignore_empty=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    data_dir: Path = Path(".data")

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    public_url: str = Field(
        default="",
        description="Base URL clients use to reach the gateway; defaults to http://host:port.",
    )
    admin_token: str = ""
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)

    # Connections per process, never more: one system is six processes, and PostgreSQL's
    # default max_connections is 100.
    database_pool_size: int = Field(default=10, ge=1, le=500)

    stream_prefix: str = ""
    work_tiers: dict[str, str] = Field(
        default_factory=dict,
        description='Tier overrides as JSON, for example {"email": "low"}.',
    )
    consumer_base: int = Field(default=1, ge=1, le=64)
    consumer_batch_size: int = Field(default=32, ge=1, le=1000)
    stream_block_ms: int = Field(default=1000, ge=10)
    retry_base_seconds: float = Field(default=0.5, gt=0)
    retry_factor: float = Field(default=2.0, ge=1)
    retry_cap_seconds: float = Field(default=10.0, gt=0)
    retry_max_attempts: int = Field(default=6, ge=1)
    retry_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Retry settings per work type as JSON, for example "
        '{"email": {"max_attempts": 10, "base_seconds": 1, "factor": 3, "cap_seconds": 20}}.',
    )
    handler_timeout_seconds: float = Field(default=15.0, gt=0)
    reclaim_idle_seconds: float = Field(default=30.0, gt=0)
    backlog_limit: int = Field(default=200_000, ge=1)

    relay_poll_seconds: float = Field(default=1.0, gt=0)
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)

    simulated_latency: LatencyProfile = LatencyProfile.NONE
    payment_limit: Decimal = Field(
        default=Decimal("50000.00"),
        description="The simulated provider declines any charge above this amount.",
    )

    fault_injection: FaultInjection | None = Field(
        default=None,
        description="Testing aid, off by default. JSON such as "
        '{"group": "analytics", "customer_prefix": "poison-"} makes that group\'s handler '
        "fail for every order whose customer_id starts with the prefix.",
    )

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    mail_from: str = "orders@orderflow.local"
    mail_dir: Path | None = None
    invoice_dir: Path | None = None

    otlp_endpoint: str = Field(
        default="",
        description="OTLP/HTTP endpoint for traces, e.g. http://jaeger:4318; empty: no tracing.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of a service's or the relay's /metrics endpoint; 0 turns it off.",
    )
    metrics_host: str = "127.0.0.1"

    log_level: str = "INFO"
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")

    @property
    def mail_path(self) -> Path:
        return self.mail_dir or self.data_dir / "mail"

    @property
    def invoice_path(self) -> Path:
        return self.invoice_dir or self.data_dir / "invoices"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
