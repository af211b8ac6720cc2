"""The printed report of a chaos run: faults, recovery, load, consumer activity, checks."""

import json
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from services.chaos.faults import FaultRecord
from services.chaos.invariants import Check
from services.chaos.load import LoadRecord
from services.chaos.snapshot import Snapshot


@dataclass
class LogCounts:
    """Counts of the retries, dead letters, reclaims and restarts that the processes logged."""

    retries: Counter[str] = field(default_factory=Counter)
    outage_retries: int = 0
    exhausted: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    reclaimed: int = 0
    groups_created: Counter[str] = field(default_factory=Counter)
    reconciles: int = 0
    reconciled_orders: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def count_log_events(log_dir: Path) -> LogCounts:
    counts = LogCounts()
    for path in sorted(log_dir.glob("*.log")):
        with path.open(errors="replace") as lines:
            for line in lines:
                if line.startswith("{"):
                    _count_line(counts, path.stem, line)
    return counts


def _count_line(counts: LogCounts, process: str, line: str) -> None:
    try:
        entry = json.loads(line)
    except ValueError:
        return
    event = entry.get("event")
    group = str(entry.get("group", "?"))
    if event == "event failed, will retry":
        counts.retries[group] += 1
        counts.outage_retries += bool(entry.get("outage"))
    elif event == "event failed on its last attempt, dead-lettering":
        counts.exhausted[group] += 1
    elif event == "entry is not a valid event, dead-lettering":
        counts.malformed[group] += 1
    elif event == "reclaimed idle entries":
        counts.reclaimed += int(entry.get("count", 0))
    elif event == "consumer group was missing and is created":
        counts.groups_created[group] += 1
    elif event == "reconciled unfinished orders":
        counts.reconciles += 1
        counts.reconciled_orders += int(entry.get("orders", 0))
    if entry.get("level") == "error":
        counts.errors[process] += 1


@dataclass(frozen=True)
class Recovery:
    kind: str
    next_order_seconds: float | None
    drained_seconds: float | None


def recovery_times(
    records: list[FaultRecord], snapshot: Snapshot, poisoned: set[str]
) -> list[Recovery]:
    """Measure, per fault, how soon after it ended orders were fully processed again.

    `next_order_seconds` runs from the fault's end until the first order accepted after it
    was fully processed; `drained_seconds` until every order accepted before its end was.
    """
    orders = sorted(
        (row["created_at"], order_id)
        for order_id, row in snapshot.orders.items()
        if order_id not in poisoned and order_id in snapshot.settled_at
    )
    created = [created_at for created_at, _ in orders]
    # The latest settle time among the orders up to each position.
    running_max: list[datetime] = []
    for _, order_id in orders:
        settled = snapshot.settled_at[order_id]
        running_max.append(max(running_max[-1], settled) if running_max else settled)
    recoveries = []
    for record in records:
        if record.ended_at is None:
            continue
        position = bisect_right(created, record.ended_at)
        next_order = None
        if position < len(orders):
            next_order = (
                snapshot.settled_at[orders[position][1]] - record.ended_at
            ).total_seconds()
        drained = None
        if position > 0:
            drained = max((running_max[position - 1] - record.ended_at).total_seconds(), 0.0)
        recoveries.append(Recovery(record.kind, next_order, drained))
    return recoveries


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def print_faults(records: list[FaultRecord], load_started_at: datetime) -> None:
    print("\nFaults injected (time from the start of the load, UTC clock time)")
    for record in records:
        offset = (record.started_at - load_started_at).total_seconds()
        clock = record.started_at.strftime("%H:%M:%S.%f")[:-3]
        lasted = (record.ended_at - record.started_at).total_seconds() if record.ended_at else None
        print(f"  +{offset:6.1f} s {clock}  {record.kind:<20} lasted {_seconds(lasted)}")
        print(f"      {record.detail}")
        for observation in record.observations:
            print(f"      seen: {observation}")
        for failure in record.failures:
            print(f"      FAILED: {failure}")


def print_recovery(recoveries: list[Recovery]) -> None:
    print("\nRecovery after each fault ended")
    print(
        "  (seconds from the fault's end until the first order accepted after it, and every "
        "order accepted\n   before it, was fully processed; a backlog left by earlier faults "
        "or a busy machine adds to both)"
    )
    print(f"  {'fault':<20} {'next order fully processed':>28} {'earlier orders all settled':>28}")
    for recovery in recoveries:
        print(
            f"  {recovery.kind:<20} {_seconds(recovery.next_order_seconds):>28} "
            f"{_seconds(recovery.drained_seconds):>28}"
        )


def print_load(load: LoadRecord, duration_seconds: float, snapshot: Snapshot) -> None:
    poison = sum(order.poison for order in load.accepted.values())
    print("\nLoad")
    print(
        f"  orders accepted (201): {len(load.accepted)} in {duration_seconds:g} s "
        f"({poison} poison), {len(snapshot.orders)} orders in the database"
    )
    print(
        f"  replays {load.replays}, conflicting key reuses {load.conflicts}, "
        f"cancels {dict(sorted(load.cancels.items()))}, same-key bursts {len(load.bursts)}"
    )
    print(
        f"  refused connections {load.transport_errors}, answers 503 with Retry-After "
        f"{len(load.shed)}, other 5xx {len(load.server_errors)}, abandoned {load.abandoned}"
    )
    answers = ", ".join(f"{name}: {count}" for name, count in sorted(load.statuses.items()))
    print(f"  answers: {answers}")


def print_consumers(counts: LogCounts) -> None:
    print("\nConsumers and relay (from the process logs)")
    print(
        f"  retries {sum(counts.retries.values())} {dict(sorted(counts.retries.items()))}, "
        f"{counts.outage_retries} of them while a dependency was down"
    )
    dead = counts.exhausted + counts.malformed
    print(
        f"  dead letters written {sum(dead.values())}: after the last attempt "
        f"{dict(sorted(counts.exhausted.items()))}, invalid entries "
        f"{dict(sorted(counts.malformed.items()))}"
    )
    print(
        f"  entries reclaimed from idle consumers {counts.reclaimed}; groups recreated "
        f"{dict(sorted(counts.groups_created.items()))}; reconciler runs {counts.reconciles} "
        f"({counts.reconciled_orders} orders queued again)"
    )
    print(f"  error lines per process: {dict(sorted(counts.errors.items())) or 'none'}")


def print_checks(checks: list[Check]) -> None:
    print("\nInvariants")
    for check in checks:
        print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}: {check.figures}")
    failed = [check for check in checks if not check.passed]
    verdict = "PASS" if not failed else "FAIL"
    print(f"\nchaos result: {verdict}, {len(checks) - len(failed)} of {len(checks)} checks passed")
