"""The whole system started as `make run` starts it, fed 50 orders over HTTP."""

import asyncio
import email
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pypdf import PdfReader

from shared.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_ORDER = REPOSITORY_ROOT / "docs" / "sample-order.json"
STEPS = ("payment", "inventory", "email", "invoice", "analytics", "warehouse")
STOP_LIMIT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def load_order(rng: random.Random, index: int) -> dict[str, Any]:
    """An order shaped like the load clients' ones: one line, prod-0..prod-99."""
    return {
        "customer_id": f"e2e-{index}",
        "customer_email": f"e2e-{index}@example.com",
        "items": [
            {
                "product_id": f"prod-{rng.randrange(100)}",
                "product_name": "Load item",
                "quantity": rng.randint(1, 5),
                "unit_price": rng.randint(10, 1009),
            }
        ],
        "shipping_address": {
            "street": "1 Test Way",
            "city": "Springfield",
            "state": "IL",
            "postal_code": "62701",
            "country": "USA",
        },
        "payment_method": "debit_card",
    }


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path, psutil.Process]]:
    http_port = free_port()
    data_dir = tmp_path / "data"
    env = dict(os.environ)
    env.update(
        {
            "ORDERFLOW_REDIS_URL": settings.redis_url,
            "ORDERFLOW_DATABASE_URL": settings.database_url,
            "ORDERFLOW_STREAM_PREFIX": settings.stream_prefix,
            "ORDERFLOW_HTTP_PORT": str(http_port),
            "ORDERFLOW_SMTP_PORT": str(free_port()),
            "ORDERFLOW_DATA_DIR": str(data_dir),
            "ORDERFLOW_LOG_LEVEL": "WARNING",
            "ORDERFLOW_METRICS_PORT": "0",
        }
    )
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up"],
            cwd=REPOSITORY_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    supervisor = psutil.Process(process.pid)
    try:
        yield f"http://127.0.0.1:{http_port}", data_dir, supervisor
    finally:
        if process.poll() is None:
            process.kill()
            for child in supervisor.children(recursive=True):
                child.kill()
        process.wait(timeout=10)
        print(log_path.read_text(errors="replace")[-5000:])


async def wait_ready(client: httpx.AsyncClient, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            if (await client.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the gateway did not become ready within 60 s")


async def wait_processed(
    client: httpx.AsyncClient, order_ids: list[str], deadline_seconds: float = 90
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + deadline_seconds
    orders: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for order_id in order_ids:
            if order_id in orders:
                continue
            order = (await client.get(f"/api/v1/orders/{order_id}")).json()
            if order["status"] == "shipped" and order["fully_processed"]:
                orders[order_id] = order
        if len(orders) == len(order_ids):
            return orders
        await asyncio.sleep(0.2)
    missing = sorted(set(order_ids) - set(orders))
    raise AssertionError(f"{len(missing)} orders not fully processed in time: {missing[:5]}")


async def test_pipeline_processes_fifty_orders_fully(
    system: tuple[str, Path, psutil.Process],
) -> None:
    base_url, data_dir, supervisor = system
    rng = random.Random(7)
    bodies: list[Any] = [SAMPLE_ORDER.read_bytes()]
    bodies += [load_order(rng, index) for index in range(49)]

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        await wait_ready(client)
        created = []
        for body in bodies:
            response = await (
                client.post(
                    "/api/v1/orders", content=body, headers={"Content-Type": "application/json"}
                )
                if isinstance(body, bytes)
                else client.post("/api/v1/orders", json=body)
            )
            assert response.status_code == 201, response.text
            created.append(response.json())
        sample = created[0]
        assert sample["id"].startswith("ORD-")
        assert Decimal(str(sample["total_amount"])) == Decimal("1250.00")

        orders = await wait_processed(client, [order["id"] for order in created])
        listing = (await client.get("/api/v1/orders", params={"page": 1, "limit": 10})).json()
        summary = (await client.get("/api/v1/analytics/summary")).json()

        for order in orders.values():
            assert all(order["steps"][step]["state"] == "done" for step in STEPS), order["steps"]
            assert order["tracking_number"]
            invoice = await client.get(f"/api/v1/orders/{order['id']}/invoice")
            assert invoice.status_code == 200
            assert invoice.headers["content-type"] == "application/pdf"
            pdf_path = data_dir / "invoices" / f"{order['id']}.pdf"
            pages = PdfReader(pdf_path).pages
            assert order["id"] in pages[0].extract_text()

    assert listing["total"] >= 50
    mail_files = list((data_dir / "mail").glob("*.eml"))
    assert len(mail_files) == 50
    subjects = {email.message_from_bytes(path.read_bytes())["Subject"] for path in mail_files}
    assert all(f"Order confirmation {order_id}" in subjects for order_id in orders)

    expected_revenue = sum(Decimal(str(order["total_amount"])) for order in orders.values())
    assert summary["totals"]["orders"] == 50
    assert Decimal(str(summary["totals"]["revenue"])) == expected_revenue

    children = supervisor.children(recursive=True)
    started = time.monotonic()
    supervisor.send_signal(signal.SIGINT)
    supervisor.wait(timeout=STOP_LIMIT_SECONDS + 5)
    assert time.monotonic() - started < STOP_LIMIT_SECONDS
    assert not [child for child in children if child.is_running() and child.status() != "zombie"]
