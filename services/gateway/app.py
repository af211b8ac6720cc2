"""Wiring of the gateway: one Litestar app whose lifespan builds the engine, the Redis
client, the order service and the backlog monitor."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import uvicorn
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from services.gateway.admin import ADMIN_ROUTES
from services.gateway.backlog import BacklogMonitor
from services.gateway.errors import EXCEPTION_HANDLERS
from services.gateway.monitor import MONITOR_ROUTES, ThroughputSampler
from services.gateway.orders import OrderService
from services.gateway.routes import ROUTES
from shared.db.engine import make_engine, make_session_factory
from shared.metrics import HTTP_DURATION, HTTP_REQUESTS
from shared.settings import Settings
from shared.telemetry import configure_tracing, instrument_engine, span_from, trace_id_hex
from shared.tiers import Tier, TierMap

log = structlog.get_logger("orderflow.gateway")


def request_logging(app: ASGIApp) -> ASGIApp:
    """Log one line per request and record its count and duration by route template."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method = scope.get("method", "")
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }

        async def send_and_capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with span_from(f"{method} request", headers, SpanKind.SERVER) as span:
            try:
                await app(scope, receive, send_and_capture)
            finally:
                elapsed = time.perf_counter() - started
                route = scope.get("path_template") or "unmatched"
                span.update_name(f"{method} {route}")
                span.set_attribute("http.response.status_code", status)
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_DURATION.labels(method, route).observe(elapsed)
                log.info(
                    "request",
                    method=method,
                    path=scope.get("path"),
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    trace_id=trace_id_hex(span),
                )

    return middleware


def create_app(settings: Settings) -> Litestar:
    tiers = TierMap(settings.stream_prefix, settings.work_tiers)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        configure_tracing("gateway", settings.otlp_endpoint)
        engine = make_engine(settings.database_url, settings.database_pool_size)
        instrument_engine(engine)
        redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        backlog = BacklogMonitor(
            redis,
            tiers.all_streams(),
            settings.backlog_limit,
            [tiers.dead_letter_stream(tier) for tier in Tier],
        )
        app.state.engine = engine
        app.state.redis = redis
        app.state.backlog = backlog
        app.state.tiers = tiers
        app.state.admin_token = settings.admin_token
        app.state.orders = OrderService(
            make_session_factory(engine), settings.base_url, settings.invoice_path
        )
        throughput = ThroughputSampler(redis, tiers)
        app.state.throughput = throughput
        backlog.start()
        throughput.start()
        log.info("gateway started", url=settings.base_url, monitor=f"{settings.base_url}/monitor")
        try:
            yield
        finally:
            await throughput.stop()
            await backlog.stop()
            await redis.aclose()
            await engine.dispose()
            log.info("gateway stopped")

    return Litestar(
        route_handlers=[*ROUTES, *ADMIN_ROUTES, *MONITOR_ROUTES],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_logging],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="orderflow", version="0.1.0", path="/schema"),
        debug=False,
    )


def run_gateway(settings: Settings) -> None:
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
