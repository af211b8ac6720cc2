"""`orderflow up --embedded`: the whole system on its own embedded Redis and PostgreSQL,
as on a machine that has neither."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_ORDER = REPOSITORY_ROOT / "docs" / "sample-order.json"
STOP_LIMIT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its parent is private to root, and the embedded PostgreSQL
    # runs as its own unprivileged user when started by root.
    path = Path(tempfile.mkdtemp(prefix="orderflow-embedded-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_embedded_ships_sample_order(data_dir: Path) -> None:
    http_port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORDERFLOW_")}
    env.update(
        {
            "ORDERFLOW_HTTP_PORT": str(http_port),
            "ORDERFLOW_SMTP_PORT": str(free_port()),
            "ORDERFLOW_DATA_DIR": str(data_dir),
            "ORDERFLOW_METRICS_PORT": "0",
            "ORDERFLOW_LOG_LEVEL": "WARNING",
        }
    )
    log_path = data_dir / "up.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--embedded"],
            cwd=REPOSITORY_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    supervisor = psutil.Process(process.pid)
    base_url = f"http://127.0.0.1:{http_port}"
    try:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            created = client.post(
                "/api/v1/orders",
                content=SAMPLE_ORDER.read_bytes(),
                headers={"Content-Type": "application/json"},
            )
            assert created.status_code == 201, created.text
            order_id = created.json()["id"]

            order = created.json()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not order["fully_processed"]:
                time.sleep(0.2)
                order = client.get(f"/api/v1/orders/{order_id}").json()

        assert order["status"] == "shipped"
        assert (data_dir / "invoices" / f"{order_id}.pdf").is_file()
        assert len(list((data_dir / "mail").glob("*.eml"))) == 1
        assert (data_dir / "postgres" / "pgdata").is_dir()
        assert (data_dir / "redis").is_dir()

        descendants = supervisor.children(recursive=True)
        started = time.monotonic()
        supervisor.send_signal(signal.SIGINT)
        process.wait(timeout=STOP_LIMIT_SECONDS + 20)
        assert time.monotonic() - started < STOP_LIMIT_SECONDS
        left = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, f"processes left running: {[p.cmdline() for p in left]}"
    finally:
        if process.poll() is None:
            for child in supervisor.children(recursive=True):
                child.kill()
            process.kill()
            process.wait(timeout=10)
        print(log_path.read_text(errors="replace")[-4000:])
