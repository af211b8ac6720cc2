"""The monitor page in a headless Chromium, against a gateway process and a real Redis.

The gateway runs as `orderflow gateway` does. The tests prepare streams, groups and dead
letters in Redis themselves. The analytics consumer runs in the test process, so the Replay
button's effect can be followed to the order's analytics step.
"""

import asyncio
import inspect
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.analytics.handlers import AnalyticsContext, handle_analytics
from shared.db.models import OutboxRecord
from shared.events import encode_entry
from shared.settings import LatencyProfile, Settings
from shared.streams.consumer import ConsumerOptions, GroupConsumer, GroupSpec
from shared.streams.groups import dead_letter, ensure_group
from shared.tiers import Tier, TierMap, WorkType

playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="playwright is not installed: pip install playwright (`playwright install` is not "
    "needed because the test drives /usr/bin/chromium)",
)

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not CHROMIUM_PATH.exists(),
        reason=f"{CHROMIUM_PATH} is missing: install it with `apt-get install -y chromium`",
    ),
]

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_COMMAND = [sys.executable, "-m", "services.cli", "gateway"]
READY_TIMEOUT_SECONDS = 30.0
WAIT_TIMEOUT_SECONDS = 20.0
POLL_INTERVAL_SECONDS = 0.1
PAGE_TIMEOUT_MS = 15_000
TEST_CONSUMER = "monitor-test-consumer"
MARKUP = "<img src=x onerror=\"document.title='injected'\"><b>bold</b>"
SAMPLE_ORDER = {
    "customer_id": "monitor-customer",
    "customer_email": "monitor@example.com",
    "items": [
        {"product_id": "prod-1", "product_name": "Laptop", "quantity": 1, "unit_price": 1200},
        {"product_id": "prod-2", "product_name": "Mouse", "quantity": 2, "unit_price": 25},
    ],
    "shipping_address": {
        "street": "123 Main St",
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94102",
        "country": "USA",
    },
    "payment_method": "credit_card",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_until(
    check: Callable[[], Any | Awaitable[Any]],
    description: str,
    timeout_seconds: float = WAIT_TIMEOUT_SECONDS,
) -> Any:
    """Poll `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {description}")
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


@contextmanager
def gateway_process(settings: Settings, tmp_path: Path, admin_token: str) -> Iterator[str]:
    """Run the gateway on a free port; yield its base URL and stop it on exit."""
    port = free_port()
    env = dict(os.environ)
    for name in ("ORDERFLOW_ADMIN_TOKEN", "ORDERFLOW_PUBLIC_URL"):
        env.pop(name, None)
    env.update(
        {
            "ORDERFLOW_DATABASE_URL": settings.database_url,
            "ORDERFLOW_REDIS_URL": settings.redis_url,
            "ORDERFLOW_STREAM_PREFIX": settings.stream_prefix,
            "ORDERFLOW_HTTP_HOST": "127.0.0.1",
            "ORDERFLOW_HTTP_PORT": str(port),
            "ORDERFLOW_DATA_DIR": str(tmp_path / "data"),
            "ORDERFLOW_LOG_LEVEL": "WARNING",
        }
    )
    if admin_token:
        env["ORDERFLOW_ADMIN_TOKEN"] = admin_token
    log_path = tmp_path / f"gateway-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            GATEWAY_COMMAND,
            cwd=REPOSITORY_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        print(log_path.read_text(errors="replace")[-5000:])


async def wait_ready(client: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        try:
            return (await client.get("/ready")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(ready, "the gateway to answer /ready", READY_TIMEOUT_SECONDS)


@asynccontextmanager
async def chromium_page(base_url: str) -> AsyncIterator[Any]:
    """Open a page in a fresh headless Chromium profile; fail on script errors or
    requests to any origin other than the gateway."""
    page_errors: list[str] = []
    foreign_requests: list[str] = []
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1100})
            page = await context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            playwright_api.expect.set_options(timeout=PAGE_TIMEOUT_MS)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    page_errors.append(message.text)
                    if message.type == "error" and "401" not in message.text
                    else None
                ),
            )
            page.on(
                "request",
                lambda request: (
                    None
                    if request.url.startswith((f"{base_url}/", "data:"))
                    else foreign_requests.append(request.url)
                ),
            )
            yield page
        finally:
            await browser.close()
    assert page_errors == []
    assert foreign_requests == []


async def place_order(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/v1/orders", json=SAMPLE_ORDER)
    assert response.status_code == 201, response.text
    order_id: str = response.json()["id"]
    return order_id


async def order_created_fields(
    sessions: async_sessionmaker[AsyncSession], order_id: str
) -> dict[str, str]:
    """Return the stream entry the relay would publish for the order's OrderCreated event."""
    async with sessions() as session:
        record = (
            await session.execute(
                select(OutboxRecord).where(
                    OutboxRecord.order_id == order_id, OutboxRecord.event_type == "OrderCreated"
                )
            )
        ).scalar_one()
    return encode_entry(
        record.event_type, record.event_id, record.order_id, record.payload, record.headers
    )


async def deliver_one(redis: Redis, stream: str, group: str, fields: dict[str, str]) -> bytes:
    """Add an entry and deliver it to the test consumer, leaving it pending."""
    await ensure_group(redis, stream, group)
    entry_id = cast(bytes, await redis.xadd(stream, cast(dict[Any, Any], fields)))
    delivered: Any = await redis.xreadgroup(group, TEST_CONSUMER, {stream: ">"}, count=1)
    assert delivered[0][1][0][0] == entry_id
    return entry_id


async def make_dead_letter(
    redis: Redis, tiers: TierMap, tier: Tier, group: str, fields: dict[str, str], error: str
) -> str:
    """Deliver an entry to `group` and dead-letter it as the consumer runtime does."""
    stream = tiers.stream(tier)
    entry_id = await deliver_one(redis, stream, group, fields)
    raw_fields = {key.encode(): value.encode() for key, value in fields.items()}
    await dead_letter(
        redis,
        stream=stream,
        group=group,
        dead_letter_stream=tiers.dead_letter_stream(tier),
        entry_id=entry_id,
        fields=raw_fields,
        error=error,
        attempts=6,
    )
    newest: Any = await redis.xrevrange(tiers.dead_letter_stream(tier), count=1)
    return f"{tier.value}:{newest[0][0].decode()}"


async def dead_letter_exists(redis: Redis, tiers: TierMap, reference: str) -> bool:
    tier, _, entry_id = reference.partition(":")
    found = await redis.xrange(tiers.dead_letter_stream(Tier(tier)), min=entry_id, max=entry_id)
    return bool(found)


async def page_matches_redis(page: Any, redis: Redis, tiers: TierMap) -> bool:
    """Compare every tier's length and every group's lag and pending on the page with Redis."""
    for tier in Tier:
        stream = tiers.stream(tier)
        card = page.locator(f'article[data-tier="{tier.value}"]')
        if await card.count() != 1:
            return False
        length = await card.locator('dd[data-field="length"]').text_content()
        if length != f"{await redis.xlen(stream):,}":
            return False
        groups = await redis.xinfo_groups(stream) if await redis.exists(stream) else []
        for info in groups:
            row = card.locator(f'tr[data-group="{info["name"].decode()}"]')
            if await row.count() != 1:
                return False
            pending = await row.locator('td[data-field="pending"]').text_content()
            lag = await row.locator('td[data-field="lag"]').text_content()
            expected_lag = "unknown" if info["lag"] is None else f"{info['lag']:,}"
            if pending != f"{info['pending']:,}" or lag != expected_lag:
                return False
    return True


@asynccontextmanager
async def analytics_consumer(
    redis: Redis, tiers: TierMap, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[None]:
    tier = tiers.tier_of(WorkType.ANALYTICS)
    spec = GroupSpec(
        group="analytics",
        stream=tiers.stream(tier),
        dead_letter_stream=tiers.dead_letter_stream(tier),
        handler=partial(handle_analytics, AnalyticsContext(sessions, LatencyProfile.NONE)),
        accepts=frozenset({"OrderCreated"}),
    )
    consumer = GroupConsumer(
        redis,
        spec,
        ConsumerOptions(block_ms=100, handler_timeout_seconds=5.0, reclaim_idle_seconds=10.0),
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        consumer.stop()
        await asyncio.wait_for(task, timeout=5)


async def test_monitor_replays_dead_letter_when_admin_clicks(
    settings: Settings,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    token = f"monitor-{uuid.uuid4().hex}"
    tiers = TierMap(settings.stream_prefix, settings.work_tiers)
    analytics_tier = tiers.tier_of(WorkType.ANALYTICS)

    with gateway_process(settings, tmp_path, token) as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            await wait_ready(client)
            order_id = await place_order(client)
            fields = await order_created_fields(sessions, order_id)
            to_replay = await make_dead_letter(
                redis, tiers, analytics_tier, "analytics", fields, "TimeoutError: handler timed out"
            )
            to_delete = await make_dead_letter(
                redis, tiers, Tier.DEFAULT, "email", fields, "SMTPServerDisconnected: closed"
            )
            await deliver_one(redis, tiers.stream(Tier.CRITICAL), "payments", fields)

            async with chromium_page(base_url) as page:
                await page.goto(f"{base_url}/monitor")
                expect = playwright_api.expect

                # Without a token the admin sections stay empty; the public orders show.
                await expect(page.locator("#access")).to_contain_text("enter the admin token")
                await expect(page.locator("#tiers-error")).to_have_text("Needs the admin token.")
                await expect(page.locator(f'tr[data-order="{order_id}"]')).to_have_count(1)
                assert await page.locator("tr[data-reference]").count() == 0

                await page.fill("#token", "not-the-token")
                await page.click("#token-save")
                await expect(page.locator("#access")).to_contain_text("rejected this admin token")
                await expect(page.locator("#access")).to_have_attribute("data-writable", "false")

                await page.fill("#token", token)
                await page.click("#token-save")
                await expect(page.locator("#access")).to_have_attribute("data-writable", "true")
                stored = await page.evaluate("sessionStorage.getItem('orderflow.adminToken')")
                assert stored == token

                await wait_until(
                    lambda: page_matches_redis(page, redis, tiers), "the page to match Redis"
                )
                payments = page.locator('article[data-tier="critical"] tr[data-group="payments"]')
                await expect(payments.locator('td[data-field="pending"]')).to_have_text("1")
                consumer = payments.locator(f'li[data-consumer="{TEST_CONSUMER}"]')
                await expect(consumer).to_have_count(1)
                idle = consumer.locator('[data-field="idle"]')
                await expect(idle).to_have_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))
                await expect(
                    page.locator('article[data-tier="default"] dd[data-field="dead_letters"]')
                ).to_have_text("1")

                # The page follows Redis without a reload.
                await redis.xadd(tiers.stream(Tier.CRITICAL), {"type": "Unknown"})
                await expect(
                    page.locator('article[data-tier="critical"] dd[data-field="length"]')
                ).to_have_text("2")

                replay_row = page.locator(f'tr[data-reference="{to_replay}"]')
                delete_row = page.locator(f'tr[data-reference="{to_delete}"]')
                await expect(replay_row).to_contain_text(order_id)
                await expect(delete_row).to_contain_text("SMTPServerDisconnected: closed")
                await expect(delete_row.locator('button[data-action="purge"]')).to_be_enabled()
                before = tmp_path / "monitor-dead-letters.png"
                await page.screenshot(path=str(before), full_page=True)
                print(f"monitor screenshot with dead letters: {before}")

                async def accept(dialog: Any) -> None:
                    await dialog.accept()

                page.once("dialog", accept)
                await delete_row.locator('button[data-action="purge"]').click()
                await expect(delete_row).to_have_count(0)
                await expect(page.locator("#notice")).to_have_text(f"Deleted {to_delete}.")
                assert not await dead_letter_exists(redis, tiers, to_delete)
                assert await redis.xlen(tiers.stream(Tier.DEFAULT)) == 1

                async with analytics_consumer(redis, tiers, sessions):
                    await replay_row.locator('button[data-action="replay"]').click()
                    await expect(replay_row).to_have_count(0)
                    await expect(page.locator("#notice")).to_have_text(f"Replayed {to_replay}.")
                    assert not await dead_letter_exists(redis, tiers, to_replay)

                    async def analytics_done() -> bool:
                        order = (await client.get(f"/api/v1/orders/{order_id}")).json()
                        return bool(order["steps"]["analytics"]["state"] == "done")

                    await wait_until(analytics_done, "the replayed event to be processed")
                    step = page.locator(f'tr[data-order="{order_id}"] td[data-step="analytics"]')
                    await expect(step).to_have_attribute("data-state", "done")

                analytics_stream = tiers.stream(analytics_tier)
                assert await redis.xlen(analytics_stream) == 2
                assert (await redis.xpending(analytics_stream, "analytics"))["pending"] == 0
                await expect(page.locator("#dead-letters")).to_have_text("No dead letters.")

                legend = page.locator('#throughput li[data-group="analytics"]')
                await expect(legend).to_have_count(1, timeout=WAIT_TIMEOUT_SECONDS * 1000)
                await wait_until(
                    lambda: page_matches_redis(page, redis, tiers), "the page to match Redis"
                )
                screenshot = tmp_path / "monitor.png"
                await page.screenshot(path=str(screenshot), full_page=True)
                print(f"monitor screenshot: {screenshot}")


async def test_monitor_read_only_when_token_unset(
    settings: Settings,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    tiers = TierMap(settings.stream_prefix, settings.work_tiers)

    with gateway_process(settings, tmp_path, admin_token="") as base_url:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            await wait_ready(client)
            order_id = await place_order(client)
            fields = await order_created_fields(sessions, order_id)
            fields["order_id"] = MARKUP
            reference = await make_dead_letter(redis, tiers, Tier.HIGH, "inventory", fields, MARKUP)

            async with chromium_page(base_url) as page:
                await page.goto(f"{base_url}/monitor")
                expect = playwright_api.expect
                row = page.locator(f'tr[data-reference="{reference}"]')
                await expect(row).to_have_count(1)
                await expect(page.locator("#access")).to_contain_text(
                    "the server has no ORDERFLOW_ADMIN_TOKEN set"
                )

                # A token typed in does not unlock actions the server cannot authorise.
                await page.fill("#token", "any-token")
                await page.click("#token-save")
                await expect(page.locator("#notice")).to_have_text(
                    "Token saved for this browser tab."
                )
                await expect(page.locator("#access")).to_contain_text(
                    "the server has no ORDERFLOW_ADMIN_TOKEN set"
                )
                await expect(page.locator("#access")).to_have_attribute("data-writable", "false")
                await expect(row.locator('button[data-action="replay"]')).to_be_disabled()
                await expect(row.locator('button[data-action="purge"]')).to_be_disabled()

                # Data is shown as text, never parsed as markup.
                cells = await row.locator("td").all_text_contents()
                assert cells.count(MARKUP) == 2
                assert await page.locator("#dead-letters img, #dead-letters b").count() == 0
                assert await page.title() == "orderflow monitor"

            assert await dead_letter_exists(redis, tiers, reference)
