"""`orderflow chaos`: run the whole system under load, break it on a schedule, check it.

The run needs nothing running: it starts its own Redis and PostgreSQL on spare loopback
ports in a temporary folder, and every orderflow process with short timings, so retries,
reclaims and recoveries happen within seconds. After the load it waits until every order
has settled, checks the guarantees, prints the report and stops everything, also on Ctrl-C,
SIGTERM or an error.
"""

import asyncio
import json
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from redis.exceptions import RedisError

from services.chaos.faults import (
    FAULT_KINDS,
    POISON_GROUP,
    POISON_PREFIX,
    FaultInjector,
    FaultRecord,
)
from services.chaos.invariants import Check, RunFacts, check_all
from services.chaos.load import LoadGenerator
from services.chaos.report import (
    count_log_events,
    print_checks,
    print_consumers,
    print_faults,
    print_load,
    print_recovery,
    recovery_times,
)
from services.chaos.snapshot import stream_backlog, take_snapshot, wait_until_settled
from services.chaos.system import ChaosSystem

MIN_DURATION_SECONDS = 30.0  # the schedule needs room for a 5 s PostgreSQL outage and more
SETTLE_TIMEOUT_SECONDS = 120.0  # or the load's duration, if longer
WATCH_GRACE_SECONDS = 10.0  # how long fault watches may still run once orders settled
LOAD_FINISH_SECONDS = 20.0  # how long requests still retrying after the load may go on
PROGRESS_INTERVAL_SECONDS = 10.0

# Short timings, so that a retry, a reclaim or a recovery happens within seconds. Retries
# span a few seconds before an entry is dead-lettered; failures caused by an outage do not
# count toward that limit. Small batches bound the handlers running at once in a process,
# so that a handler's timeout measures its own work rather than its wait for a turn.
TIMINGS = {
    "ORDERFLOW_RECLAIM_IDLE_SECONDS": "8",
    "ORDERFLOW_HANDLER_TIMEOUT_SECONDS": "5",
    "ORDERFLOW_RETRY_BASE_SECONDS": "0.05",
    "ORDERFLOW_RETRY_CAP_SECONDS": "1",
    "ORDERFLOW_RETRY_MAX_ATTEMPTS": "10",
    "ORDERFLOW_CONSUMER_BATCH_SIZE": "4",
    "ORDERFLOW_RELAY_POLL_SECONDS": "0.5",
    "ORDERFLOW_STREAM_BLOCK_MS": "500",
    "ORDERFLOW_DATABASE_POOL_SIZE": "10",
    "ORDERFLOW_FAULT_INJECTION": json.dumps(
        {"group": POISON_GROUP, "customer_prefix": POISON_PREFIX}
    ),
}


@dataclass(frozen=True)
class ChaosOptions:
    duration_seconds: float
    rate: float
    seed: int
    keep_data: bool


def run_chaos(options: ChaosOptions) -> int:
    """Run one chaos run; return 0 when every check passed, 1 when one failed, 130 if stopped."""
    root = Path(tempfile.mkdtemp(prefix="orderflow-chaos-"))
    root.chmod(0o755)  # the embedded PostgreSQL runs as its own account when run as root
    system = ChaosSystem(root, TIMINGS)
    # SIGINT takes the same path as SIGTERM: KeyboardInterrupt out of the event loop at
    # once, instead of asyncio's default of cancelling the main task, which a run busy in
    # a long step could take more than the stop limit to act on.
    previous_handlers = {
        signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return asyncio.run(_run(system, options))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process and server", flush=True)
        return 130
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        for problem in system.shutdown():
            print(f"warning: {problem}", flush=True)
        if options.keep_data:
            print(f"data and process logs kept in {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


async def _run(system: ChaosSystem, options: ChaosOptions) -> int:
    print(
        f"orderflow chaos: {options.duration_seconds:g} s of load at {options.rate:g} orders/s, "
        f"seed {options.seed}, working folder {system.root}",
        flush=True,
    )
    await system.start()
    print(
        f"system ready: gateway {system.base_url}, Redis {system.redis_url}, "
        f"PostgreSQL on port {system.postgres_server.port}",
        flush=True,
    )
    watcher = asyncio.create_task(system.watch())
    load = LoadGenerator(system.base_url, options.rate, options.seed, str(options.seed))
    injector = FaultInjector(system, load, options.duration_seconds)
    try:
        return await _load_and_check(system, load, injector, options)
    finally:
        watcher.cancel()
        await load.close()


async def _load_and_check(
    system: ChaosSystem, load: LoadGenerator, injector: FaultInjector, options: ChaosOptions
) -> int:
    started = time.monotonic()
    started_at = datetime.now(UTC)
    load_task = asyncio.create_task(load.run())
    progress = asyncio.create_task(_print_progress(system, load, started))
    await injector.run(started)
    await asyncio.sleep(max(started + options.duration_seconds - time.monotonic(), 0))
    progress.cancel()
    load.stopping.set()
    await load_task
    print(
        f"load stopped after {time.monotonic() - started:.0f} s; letting requests in flight "
        "finish and every order settle",
        flush=True,
    )
    await load.finish(LOAD_FINISH_SECONDS)

    settle_seconds = max(SETTLE_TIMEOUT_SECONDS, options.duration_seconds)
    settling = await wait_until_settled(system, POISON_PREFIX, settle_seconds)
    await injector.finish_watches(WATCH_GRACE_SECONDS)
    snapshot = await take_snapshot(system.database_url)
    exits = {name: child.unexpected_exits for name, child in system.children.items()}
    facts = RunFacts(system, load.record, injector.injected, POISON_PREFIX, POISON_GROUP, exits)
    checks = await check_all(facts, snapshot, settling)
    checks.append(_check_faults(injector.records))

    poisoned = {order.order_id for order in load.record.accepted.values() if order.poison}
    print_faults(injector.records, started_at)
    print_recovery(recovery_times(injector.records, snapshot, poisoned))
    print_load(load.record, options.duration_seconds, snapshot)
    print_consumers(count_log_events(system.log_dir))
    print_checks(checks)
    return 0 if all(check.passed for check in checks) else 1


def _check_faults(records: list[FaultRecord]) -> Check:
    failures = [f"{record.kind}: {text}" for record in records for text in record.failures]
    injected = {record.kind for record in records}
    missing = [kind for kind in FAULT_KINDS if kind not in injected]
    return Check(
        "every fault was injected and its effect seen",
        not failures and not missing,
        f"{len(records)} faults of {len(injected)} kinds, {len(missing)} kinds missing"
        + (f"; {'; '.join(failures)}" if failures else ""),
    )


async def _print_progress(system: ChaosSystem, load: LoadGenerator, started: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
        record = load.record
        try:
            backlog = f"{await stream_backlog(system)} entries waiting in the groups"
        except (RedisError, OSError):
            backlog = "stream backlog unknown while Redis is down"
        print(
            f"  +{time.monotonic() - started:4.0f} s: {len(record.accepted)} orders accepted, "
            f"{len(record.shed)} answers 503, {record.transport_errors} refused connections, "
            f"{backlog}",
            flush=True,
        )
