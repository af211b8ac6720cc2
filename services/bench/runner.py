"""`orderflow bench`: start or reach the system, warm it up, run a scenario, write the result."""

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shlex
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from redis.asyncio import Redis

from services.bench.load import OpenLoopGenerator
from services.bench.observe import (
    BacklogReader,
    Sampler,
    admin_backlog,
    collect_orders,
    redis_backlog,
    wait_drained,
)
from services.bench.options import check_options
from services.bench.payload import order_body
from services.bench.report import build_series, summary_table, write_outputs
from services.bench.scenarios import (
    DEFAULT_DURATION_SECONDS,
    DEFAULT_RATES,
    BenchContext,
    priority_rate,
    run_demo,
    run_e2e,
    run_intake,
    run_priority,
)
from services.bench.system import LocalSystem, SystemOptions
from shared.settings import Settings
from shared.tiers import TierMap, WorkType

RESULTS_FOLDER = Path("loadtest/results")
WARM_UP_ORDERS = 5
# Covers the demo step times (about 6 s per order) on a machine still busy starting up.
WARM_UP_TIMEOUT_SECONDS = 90.0
CONTROL_TIMEOUT_SECONDS = 30.0
INTERRUPTED_EXIT_CODE = 130  # the shell's code for a run ended by Ctrl-C


class BenchError(RuntimeError):
    """The benchmark could not run, for the reason in the message."""


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    problem = check_options(args)
    if problem is not None:
        print(f"orderflow bench: error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else _fresh_folder(args.scenario)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = asyncio.run(_bench(settings, args, out))
    except BenchError as exc:
        print(f"orderflow bench: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Both arrive after the exit stack in _bench has stopped the system it started.
        print("orderflow bench: interrupted; no result was written", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    print(summary_table(result))
    print(f"\nwrote {out / 'result.json'}, {out / 'report.md'} and the plots")
    return 0


def _fresh_folder(scenario: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return RESULTS_FOLDER / f"{scenario}-{stamp}-{uuid.uuid4().hex[:4]}"


async def _bench(settings: Settings, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM cancels the run like Ctrl-C does, so the started system is still removed.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    started_at = datetime.now(UTC)
    machine = machine_info()
    latency = args.latency or ("demo" if args.scenario in ("demo", "priority") else "none")
    async with contextlib.AsyncExitStack() as stack:
        system = None
        url = args.url
        if url is None:
            system = LocalSystem(_system_options(settings, args, latency, out))
            print(f"starting orderflow up (output in {out / 'system.log'})", flush=True)
            await stack.enter_async_context(system)
            url = system.url
        headers = (
            {"Authorization": f"Bearer {settings.admin_token}"} if settings.admin_token else {}
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, timeout=CONTROL_TIMEOUT_SECONDS, headers=headers)
        )
        backlog = admin_backlog(client)
        if system is not None and system.redis_url is not None:
            redis = Redis.from_url(system.redis_url, socket_timeout=CONTROL_TIMEOUT_SECONDS)
            stack.push_async_callback(redis.aclose)
            backlog = redis_backlog(redis, TierMap(system.stream_prefix, settings.work_tiers))
        run_id = uuid.uuid4().hex[:8]
        await warm_up(client, backlog, run_id)
        ctx = _context(settings, args, url, client, backlog, run_id, system)
        ctx.sampler.start()
        try:
            details = await _run_scenario(settings, ctx, args)
        finally:
            await ctx.sampler.stop()
        result = {
            "scenario": args.scenario,
            **details,
            "command": "orderflow " + shlex.join(sys.argv[1:]),
            "started_at": started_at.isoformat(timespec="seconds"),
            "seconds": round((datetime.now(UTC) - started_at).total_seconds(), 1),
            "machine": machine,
            "system": _system_info(url, system, latency, args),
            "processes": ctx.sampler.summary(),
            "generator": _generator_info(ctx),
            "warnings": _warnings(machine, ctx),
            "series": build_series(ctx),
        }
        write_outputs(out, result, ctx)
    return result


def _system_options(
    settings: Settings, args: argparse.Namespace, latency: str, out: Path
) -> SystemOptions:
    return SystemOptions(
        latency=latency,
        consumer_base=args.consumer_base,
        database_url=args.database_url,
        redis_url=args.redis_url,
        default_database_url=settings.database_url,
        default_redis_url=settings.redis_url,
        admin_token=settings.admin_token,
        log_path=out / "system.log",
    )


def _context(
    settings: Settings,
    args: argparse.Namespace,
    url: str,
    client: httpx.AsyncClient,
    backlog: BacklogReader,
    run_id: str,
    system: LocalSystem | None,
) -> BenchContext:
    parts = urlsplit(url)
    tiers = TierMap(settings.stream_prefix, settings.work_tiers)
    origin = time.time()
    return BenchContext(
        client=client,
        backlog=backlog,
        generator=OpenLoopGenerator(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            connections=args.connections,
            timeout_seconds=args.request_timeout,
        ),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 80,
        run_id=run_id,
        origin=origin,
        tier_of=lambda step: tiers.tier_of(WorkType(step)).value,
        sampler=Sampler(backlog, origin, system.processes if system else list),
        drain_timeout_seconds=args.drain_timeout,
        system=system,
    )


async def _run_scenario(
    settings: Settings, ctx: BenchContext, args: argparse.Namespace
) -> dict[str, Any]:
    scenario = args.scenario
    if scenario == "demo":
        return await run_demo(ctx, args.scale)
    seconds = args.duration or DEFAULT_DURATION_SECONDS[scenario]
    if scenario == "priority":
        base = args.consumer_base or settings.consumer_base
        default_rate = priority_rate(base, settings.consumer_batch_size)
        return await run_priority(ctx, args.rates[0] if args.rates else default_rate, seconds)
    rates = sorted(args.rates or DEFAULT_RATES[scenario])
    if scenario == "intake":
        return await run_intake(ctx, rates, seconds, args.pause_services)
    return await run_e2e(ctx, rates, seconds)


async def warm_up(client: httpx.AsyncClient, backlog: BacklogReader, run_id: str) -> None:
    """Send a few orders and wait until they are fully processed.

    This checks that every process works before any measurement, and keeps first-use
    costs (connection pools, imports on the first event) out of the figures.
    """
    customer = f"bench-{run_id}-warm-up"
    rng = random.Random(run_id)
    for _ in range(WARM_UP_ORDERS):
        try:
            response = await client.post("/api/v1/orders", json=order_body(rng, customer))
        except httpx.TransportError as exc:
            raise BenchError(
                f"could not reach the gateway at {client.base_url}: {exc!r}; "
                "start the system or check --url"
            ) from exc
        if response.status_code != 201:
            raise BenchError(
                f"warm-up order was rejected with status {response.status_code}: "
                f"{response.text[:300]}"
            )
    await wait_drained(backlog, WARM_UP_TIMEOUT_SECONDS)
    orders = await collect_orders(client, [customer], WARM_UP_TIMEOUT_SECONDS)
    unfinished = [order.order_id for order in orders if not order.fully_processed]
    if unfinished or len(orders) < WARM_UP_ORDERS:
        raise BenchError(
            f"{len(unfinished)} of {WARM_UP_ORDERS} warm-up orders were not fully processed "
            f"within {WARM_UP_TIMEOUT_SECONDS:.0f} s (for example {unfinished[:1]}); "
            "check the services' output (system.log when the bench started the system)"
        )


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _system_info(
    url: str, system: LocalSystem | None, latency: str, args: argparse.Namespace
) -> dict[str, Any]:
    if system is None:
        return {"url": url, "started_by_bench": False}
    return {
        "url": url,
        "started_by_bench": True,
        "latency": latency,
        "consumer_base": args.consumer_base,
        "stream_prefix": system.stream_prefix,
        "data_dir": str(system.data_dir),
        "database": "given" if args.database_url else "scratch",
    }


def _generator_info(ctx: BenchContext) -> dict[str, Any]:
    cpu = sum(run.cpu_seconds for run in ctx.runs)
    seconds = sum(run.seconds for run in ctx.runs)
    shortfalls = [text for run in ctx.runs if (text := run.shortfall())]
    return {
        "cpu_percent": round(100 * cpu / seconds, 1) if seconds else None,
        "connections": ctx.generator.connections,
        "shortfalls": shortfalls,
    }


def _warnings(machine: dict[str, Any], ctx: BenchContext) -> list[str]:
    warnings = []
    busy = machine["load_average"][0]
    if machine["cpus"] and busy > 0.5 * machine["cpus"]:
        warnings.append(
            f"the machine was busy before the run (1-minute load average {busy} on "
            f"{machine['cpus']} CPUs), so the figures are lower than on an idle machine"
        )
    lateness = [text for run in ctx.runs if (text := run.lateness())]
    if lateness:
        warnings.append(f"in {len(lateness)} of {len(ctx.runs)} load runs {lateness[-1]}")
    return warnings
