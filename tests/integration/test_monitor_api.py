"""The monitor's throughput sampler against a real Redis, and the monitor's HTTP routes."""

import asyncio
import contextlib
import inspect
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from services.gateway.monitor import (
    MONITOR_ROUTES,
    STATIC_DIR,
    GroupCounters,
    Sample,
    ThroughputSampler,
)
from shared.streams.groups import ensure_group
from shared.tiers import Tier, TierMap

pytestmark = pytest.mark.timeout(30)

ADMIN_TOKEN = "monitor-api-test-token"
POLL_INTERVAL_SECONDS = 0.02
WAIT_TIMEOUT_SECONDS = 10.0
FAILED_LOG = "throughput sample failed, will retry"
RESUMED_LOG = "throughput sampling resumed"


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]],
    description: str,
    timeout_seconds: float = WAIT_TIMEOUT_SECONDS,
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {description}")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


async def add_entries(redis: Redis, stream: str, count: int) -> None:
    for index in range(count):
        await redis.xadd(stream, {"type": "test", "index": str(index)})


async def read_and_ack(redis: Redis, stream: str, group: str, read: int, ack: int) -> None:
    """Deliver `read` new entries to one consumer of `group` and acknowledge the first `ack`."""
    response: Any = await redis.xreadgroup(group, "test-consumer", {stream: ">"}, count=read)
    entry_ids = [entry_id for _stream, entries in response for entry_id, _fields in entries]
    assert len(entry_ids) == read
    if ack:
        await redis.xack(stream, group, *entry_ids[:ack])


def group_rates(rates: dict[str, Any], tier: str, group: str) -> dict[str, Any]:
    for entry in rates["groups"]:
        if entry["tier"] == tier and entry["group"] == group:
            found: dict[str, Any] = entry
            return found
    raise AssertionError(f"group {tier}/{group} is not in {rates['groups']}")


# -- sampler against Redis ----------------------------------------------------------------


async def test_sampler_counts_acknowledged_when_group_acks(
    redis: Redis, stream_prefix: str
) -> None:
    tiers = TierMap(stream_prefix)
    critical = tiers.stream(Tier.CRITICAL)
    await ensure_group(redis, critical, "payments")
    await ensure_group(redis, tiers.stream(Tier.HIGH), "inventory")
    await add_entries(redis, critical, 5)
    sampler = ThroughputSampler(redis, tiers, interval_seconds=1.0, window_seconds=60.0)

    await sampler.sample_once()
    first = group_rates(sampler.rates(), "critical", "payments")
    await read_and_ack(redis, critical, "payments", read=5, ack=3)
    await sampler.sample_once()
    second = group_rates(sampler.rates(), "critical", "payments")
    remaining: Any = await redis.xrange(critical)
    await redis.xack(critical, "payments", *[entry_id for entry_id, _ in remaining])
    await sampler.sample_once()
    rates = sampler.rates()

    assert first["points"] == []
    assert first["per_second"] is None
    assert second["stream"] == critical
    assert [point["finished"] for point in second["points"]] == [3]
    assert second["per_second"] > 0
    third = group_rates(rates, "critical", "payments")
    assert [point["finished"] for point in third["points"]] == [3, 2]
    idle = group_rates(rates, "high", "inventory")
    assert [point["finished"] for point in idle["points"]] == [0, 0]
    assert [entry["tier"] for entry in rates["groups"]] == ["critical", "high"]
    assert rates["redis_ok"] is True


async def test_sampler_never_negative_when_counter_resets(redis: Redis, stream_prefix: str) -> None:
    tiers = TierMap(stream_prefix)
    low = tiers.stream(Tier.LOW)
    await ensure_group(redis, low, "analytics")
    await add_entries(redis, low, 6)
    await read_and_ack(redis, low, "analytics", read=6, ack=6)
    sampler = ThroughputSampler(redis, tiers, interval_seconds=1.0, window_seconds=60.0)
    await sampler.sample_once()

    # What Redis restarting empty looks like: the stream and its group start from nothing.
    await redis.delete(low)
    await ensure_group(redis, low, "analytics")
    await add_entries(redis, low, 3)
    await read_and_ack(redis, low, "analytics", read=2, ack=2)
    await sampler.sample_once()

    points = group_rates(sampler.rates(), "low", "analytics")["points"]
    assert [point["finished"] for point in points] == [2]
    assert points[0]["per_second"] >= 0


async def test_sampler_lists_nothing_when_streams_missing(redis: Redis, stream_prefix: str) -> None:
    sampler = ThroughputSampler(redis, TierMap(stream_prefix), interval_seconds=1.0)

    await sampler.sample_once()

    assert sampler.rates()["groups"] == []


def test_sampler_drops_samples_when_window_passes() -> None:
    sampler = ThroughputSampler(
        Redis(), TierMap("unused:"), interval_seconds=1.0, window_seconds=3.0
    )
    key = ("low", "analytics")

    for second in range(10):
        counters = {key: GroupCounters(entries_read=second * 4, pending=second)}
        sampler._add(Sample(at_ms=second * 1000, monotonic=float(second), counters=counters))

    points = sampler.rates()["groups"][0]["points"]
    # Samples 6 to 9 are within 3 s of the last; 5 stays as the base of the first interval.
    assert [point["at_ms"] for point in points] == [6000, 7000, 8000, 9000]
    assert all(point["finished"] == 3 for point in points)
    assert all(point["per_second"] == 3.0 for point in points)


def test_sampler_rejects_interval_when_exceeds_window() -> None:
    with pytest.raises(ValueError, match=r"interval 10\.0 s"):
        ThroughputSampler(Redis(), TierMap("unused:"), interval_seconds=10.0, window_seconds=5.0)


class OutageProxy:
    """A TCP proxy to Redis that can reject every connection, taking Redis away from one client.

    While down it accepts each connection and closes it at once, counting the attempts.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.down = False
        self.rejected = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.go_down()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def go_down(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.close()

    def come_up(self) -> None:
        self.down = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.rejected += 1
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(
            self.target_host, self.target_port
        )
        self._writers.update({writer, upstream_writer})
        pipes = [
            asyncio.create_task(self._pipe(reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer)),
        ]
        self._pipes.update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


@pytest.fixture
async def outage_proxy(redis_url: str) -> AsyncIterator[OutageProxy]:
    target = urlsplit(redis_url)
    proxy = OutageProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_sampler_survives_when_redis_down(
    redis: Redis, redis_url: str, stream_prefix: str, outage_proxy: OutageProxy
) -> None:
    target = urlsplit(redis_url)
    proxied_url = urlunsplit(target._replace(netloc=f"127.0.0.1:{outage_proxy.port}"))
    proxied = Redis.from_url(
        proxied_url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    tiers = TierMap(stream_prefix)
    critical = tiers.stream(Tier.CRITICAL)
    await ensure_group(redis, critical, "payments")
    sampler = ThroughputSampler(proxied, tiers, interval_seconds=0.05, window_seconds=10.0)

    with capture_logs() as logs:
        sampler.start()
        try:
            await wait_until(lambda: bool(sampler.rates()["groups"]), "a first sample")
            outage_proxy.go_down()
            await wait_until(lambda: not sampler.redis_ok, "the sampler to notice the outage")
            await wait_until(lambda: outage_proxy.rejected >= 5, "five failed samples")
            failed_while_down = [entry for entry in logs if entry["event"] == FAILED_LOG]

            outage_proxy.come_up()
            await wait_until(lambda: sampler.redis_ok, "the sampler to recover")
            await add_entries(redis, critical, 4)
            await read_and_ack(redis, critical, "payments", read=4, ack=4)

            def finished_total() -> int:
                points = group_rates(sampler.rates(), "critical", "payments")["points"]
                return sum(point["finished"] for point in points)

            await wait_until(lambda: finished_total() == 4, "the acked entries in the rates")
            running = not sampler._task.done() if sampler._task else False
        finally:
            await sampler.stop()
            await proxied.aclose()

    assert len(failed_while_down) == 1
    assert failed_while_down[0]["log_level"] == "warning"
    assert failed_while_down[0]["error"]
    assert [entry["event"] for entry in logs].count(RESUMED_LOG) == 1
    assert running


# -- HTTP routes --------------------------------------------------------------------------


def monitor_app(admin_token: str, sampler: ThroughputSampler) -> Litestar:
    return Litestar(
        route_handlers=MONITOR_ROUTES,
        state=State({"admin_token": admin_token, "throughput": sampler}),
    )


async def test_throughput_route_requires_token_when_set(redis: Redis, stream_prefix: str) -> None:
    tiers = TierMap(stream_prefix)
    await ensure_group(redis, tiers.stream(Tier.DEFAULT), "email")
    sampler = ThroughputSampler(redis, tiers)
    await sampler.sample_once()

    async with AsyncTestClient(app=monitor_app(ADMIN_TOKEN, sampler)) as client:
        missing = await client.get("/api/v1/admin/throughput")
        wrong = await client.get(
            "/api/v1/admin/throughput", headers={"Authorization": "Bearer not-the-token"}
        )
        allowed = await client.get(
            "/api/v1/admin/throughput", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    body = allowed.json()
    assert body["interval_seconds"] == 5.0
    assert body["window_seconds"] == 600.0
    assert body["groups"] == [
        {
            "tier": "default",
            "stream": tiers.stream(Tier.DEFAULT),
            "group": "email",
            "per_second": None,
            "points": [],
        }
    ]


async def test_throughput_route_open_when_token_unset(redis: Redis, stream_prefix: str) -> None:
    sampler = ThroughputSampler(redis, TierMap(stream_prefix))

    async with AsyncTestClient(app=monitor_app("", sampler)) as client:
        response = await client.get("/api/v1/admin/throughput")

    assert response.status_code == 200
    assert response.json()["groups"] == []


async def test_monitor_page_has_csp_when_served(redis: Redis, stream_prefix: str) -> None:
    sampler = ThroughputSampler(redis, TierMap(stream_prefix))

    async with AsyncTestClient(app=monitor_app(ADMIN_TOKEN, sampler)) as client:
        page = await client.get("/monitor")
        script = await client.get("/monitor/monitor.js")
        style = await client.get("/monitor/monitor.css")
        schema = await client.get("/schema/openapi.json")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert page.headers["content-disposition"].startswith("inline")
    assert '<script src="/monitor/monitor.js" defer></script>' in page.text
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "/api/v1/admin/dead-letters/" in script.text
    assert style.status_code == 200
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    paths = schema.json()["paths"]
    assert "/api/v1/admin/throughput" in paths
    assert "/monitor" not in paths


@pytest.mark.parametrize("name", ["monitor.html", "monitor.js", "monitor.css"])
def test_assets_fetch_nothing_external_when_loaded(name: str) -> None:
    text = (STATIC_DIR / name).read_text()

    urls = set(re.findall(r"https?://[^\s\"'`)]+", text))

    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "@import" not in text
    assert "//cdn" not in text


def test_script_builds_no_html_when_rendering() -> None:
    script = (STATIC_DIR / "monitor.js").read_text()
    page = (STATIC_DIR / "monitor.html").read_text()

    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, f"monitor.js uses {sink}"
    inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    assert inline_scripts == []
    assert re.findall(r"\son[a-z]+\s*=", page) == []
