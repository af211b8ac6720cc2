"""`orderflow bench` end to end: a few seconds of load against a system the bench starts.

The load generator is also checked against a tiny local HTTP server, which shows that it
reports the rate it achieved and reports when it could not keep the requested one.
"""

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.bench.client import build_post
from services.bench.load import OpenLoopGenerator, RateProfile
from shared.settings import Settings

pytestmark = [pytest.mark.e2e]

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_SECONDS = 110
HEADLINE_TYPES: dict[str, tuple[type, ...]] = {
    "accepted_per_s": (int, float),
    "http_p50_ms": (int, float),
    "http_p99_ms": (int, float),
    "errors": (int,),
    "processed_per_s": (int, float, type(None)),
    "e2e_p50_s": (int, float),
    "e2e_p99_s": (int, float),
    "drain_s": (int, float, type(None)),
}


def run_bench(settings: Settings, out: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "bench",
        "--scenario",
        "e2e",
        "--duration",
        "5",
        "--rates",
        "5",
        "--drain-timeout",
        "30",
        "--out",
        str(out),
        "--database-url",
        settings.database_url,
        "--redis-url",
        settings.redis_url,
    ]
    return subprocess.run(
        command,
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_SECONDS,
        check=False,
    )


def processes_with_prefix(stream_prefix: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("ORDERFLOW_STREAM_PREFIX") == stream_prefix:
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(120)
def test_bench_writes_report_when_run_briefly(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],  # truncates the bench's orders afterwards
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench"

    completed = run_bench(settings, out)

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "accepted_per_s" in completed.stdout
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    assert result["scenario"] == "e2e"
    for key, types in HEADLINE_TYPES.items():
        assert isinstance(result[key], types), f"{key} = {result[key]!r}"
    assert result["accepted_per_s"] > 0
    assert result["errors"] == 0
    assert result["steps"][0]["e2e"]["fully_processed"] == result["steps"][0]["accepted"]
    assert (out / "report.md").read_text().startswith("# orderflow bench: e2e")
    plots = list(out.glob("*.png"))
    assert plots
    assert all(plot.read_bytes().startswith(b"\x89PNG") for plot in plots)

    system = result["system"]
    assert system["started_by_bench"] is True
    assert not Path(system["data_dir"]).exists()
    assert not processes_with_prefix(system["stream_prefix"])
    client = redis.Redis.from_url(settings.redis_url)
    try:
        assert not list(client.scan_iter(match=f"{system['stream_prefix']}*"))
    finally:
        client.close()


Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answering_server(delay_seconds: float) -> Responder:
    """Return a keep-alive HTTP handler that responds to every request with 201 after a delay."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                await reader.readexactly(length)
                await asyncio.sleep(delay_seconds)
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


@pytest.fixture
async def server_port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    server = await asyncio.start_server(answering_server(request.param), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server_port", [0.0], indirect=True)
async def test_generator_keeps_rate_when_server_fast(server_port: int) -> None:
    request = build_post("127.0.0.1", server_port, "/api/v1/orders", b"{}")
    generator = OpenLoopGenerator("127.0.0.1", server_port, connections=16)

    run = await generator.run([request], RateProfile.constant(100, 2))
    summary = run.summary()

    assert summary["accepted"] == 200
    assert summary["errors"] == 0
    assert summary["achieved_per_s"] >= 95
    assert summary["shortfall"] is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server_port", [0.5], indirect=True)
async def test_generator_reports_shortfall_when_server_slow(server_port: int) -> None:
    request = build_post("127.0.0.1", server_port, "/api/v1/orders", b"{}")
    generator = OpenLoopGenerator("127.0.0.1", server_port, connections=2, timeout_seconds=5)

    run = await generator.run([request], RateProfile.constant(40, 1))
    summary = run.summary()

    # Two connections at 0.5 s per response carry 4 requests a second, not 40.
    assert summary["achieved_per_s"] < 10
    assert summary["shortfall"] is not None
    assert "connections were busy" in summary["shortfall"]
    assert summary["http_p99_ms"] > 1000
