"""Checks of a settled chaos run against the database, Redis and the mail and invoice folders.

`check_all` compares every table, stream and folder with what the load and the faults did,
and returns one `Check` per guarantee, with the figures it compared.
"""

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from services.chaos.faults import DEAD_CONSUMER, Injected
from services.chaos.load import LoadRecord
from services.chaos.snapshot import Settling, Snapshot
from services.chaos.system import ChaosSystem
from services.notifications.catcher import eml_file_name
from shared.ids import event_id_for
from shared.streams.groups import DEAD_LETTER_FIELD_PREFIX
from shared.streams.replies import as_text
from shared.tiers import Tier

FINAL_STATUSES = ("shipped", "cancelled", "payment_failed")
FINAL_STEP_STATES = ("done", "failed", "skipped", "refunded", "released")
POISONED_STEP = "analytics"
PAYMENT_FAILED_MAIL = "payment-failed"
CONFIRMATION_MAIL = "confirmation"
EXAMPLES = 3  # ids quoted per failed check
# The only payment state an order in this status may end with; cancelled orders may end
# with none, a refund or a decline.
EXPECTED_PAYMENT = {"shipped": "captured", "payment_failed": "declined"}


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    figures: str


@dataclass(frozen=True)
class RunFacts:
    """The run's own record of requests and faults, to compare with the database."""

    system: ChaosSystem
    load: LoadRecord
    injected: Injected
    poison_prefix: str
    poison_group: str
    unexpected_exits: dict[str, list[int]]


async def check_all(facts: RunFacts, snapshot: Snapshot, settling: Settling) -> list[Check]:
    poisoned = {
        order_id
        for order_id, row in snapshot.orders.items()
        if row["customer_id"].startswith(facts.poison_prefix)
    }
    return [
        _check_accepted(facts.load, snapshot),
        _check_idempotency(facts.load, snapshot),
        _check_settled(snapshot, settling, poisoned),
        _check_payments(snapshot),
        _check_captured_and_cancelled(snapshot),
        _check_emails(snapshot),
        _check_mail_files(facts.system, snapshot),
        _check_invoices(facts.system, snapshot),
        _check_analytics(snapshot, poisoned),
        _check_shipments(snapshot),
        _check_stock(facts.system, snapshot),
        await _check_dead_letters(facts, snapshot),
        await _check_streams(facts.system, facts.injected),
        _check_gateway_errors(facts.load),
        _check_processes(facts.unexpected_exits),
    ]


def _examples(ids: list[str] | set[str]) -> str:
    chosen = sorted(ids)[:EXAMPLES]
    return f" (e.g. {', '.join(chosen)})" if chosen else ""


def _check_accepted(load: LoadRecord, snapshot: Snapshot) -> Check:
    missing = [order_id for order_id in load.accepted if order_id not in snapshot.orders]
    without_201 = len(snapshot.orders) - (len(load.accepted) - len(missing))
    return Check(
        "every order answered 201 exists",
        not missing,
        f"{len(load.accepted)} accepted, {len(missing)} missing{_examples(missing)}; "
        f"{len(snapshot.orders)} orders in the database, {without_201} of them never "
        f"answered 201 to the client ({load.abandoned} requests abandoned)",
    )


def _check_idempotency(load: LoadRecord, snapshot: Snapshot) -> Check:
    burst_ids = [{order_id for order_id in ids if order_id} for ids in load.bursts]
    bursts_ok = all(len(ids) == 1 for ids in burst_ids)
    keys = Counter(row["idempotency_key"] for row in snapshot.orders.values())
    shared_keys = [key for key, count in keys.items() if key is not None and count > 1]
    unexpected = load.unexpected
    passed = bursts_ok and not shared_keys and not load.key_mismatches and not unexpected
    problems = [*load.key_mismatches, *unexpected][:EXAMPLES]
    return Check(
        "idempotency keys give one order each",
        passed,
        f"{load.replays} replays and {load.conflicts} conflicting reuses sent, "
        f"{len(load.key_mismatches)} replays returned another order, "
        f"{len(unexpected)} unexpected answers; bursts of 20 gave "
        f"{[len(ids) for ids in burst_ids]} distinct order id(s)"
        + (f"; {'; '.join(problems)}" if problems else ""),
    )


def _check_settled(snapshot: Snapshot, settling: Settling, poisoned: set[str]) -> Check:
    statuses = Counter(row["status"] for row in snapshot.orders.values())
    not_final = [
        order_id
        for order_id, row in snapshot.orders.items()
        if row["status"] not in FINAL_STATUSES
        or any(
            state not in FINAL_STEP_STATES
            for step, state in snapshot.steps.get(order_id, {}).items()
            if not (order_id in poisoned and step == POISONED_STEP)
        )
    ]
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    return Check(
        "every order is final with its compensations done",
        settling.settled and not not_final,
        f"{summary}; settled {settling.seconds:.1f} s after the load stopped"
        if settling.settled
        else f"{summary}; after {settling.seconds:.0f} s {settling.unsettled} orders were "
        f"unsettled and {settling.pending_entries} stream entries unacknowledged"
        f"{_examples(not_final)}",
    )


def _check_payments(snapshot: Snapshot) -> Check:
    wrong: list[str] = []
    for order_id, row in snapshot.orders.items():
        step = snapshot.steps.get(order_id, {}).get("payment")
        payment = snapshot.payments.get(order_id)
        expected_payment = EXPECTED_PAYMENT.get(row["status"])
        has_row = step in {"done", "refunded", "failed"}
        if has_row != (payment is not None) or expected_payment not in {None, payment}:
            wrong.append(order_id)
    by_status = Counter(snapshot.payments.values())
    return Check(
        "one payment per charged order, none for the others",
        not wrong,
        f"{len(snapshot.payments)} payment rows ({dict(sorted(by_status.items()))}), "
        f"{len(wrong)} orders whose payment does not match their state{_examples(wrong)}",
    )


def _check_captured_and_cancelled(snapshot: Snapshot) -> Check:
    both = [
        order_id
        for order_id, row in snapshot.orders.items()
        if row["status"] == "cancelled" and snapshot.payments.get(order_id) == "captured"
    ]
    cancelled = sum(row["status"] == "cancelled" for row in snapshot.orders.values())
    refunded = sum(
        snapshot.payments.get(order_id) == "refunded"
        for order_id, row in snapshot.orders.items()
        if row["status"] == "cancelled"
    )
    return Check(
        "no order is both captured and cancelled",
        not both,
        f"{cancelled} cancelled orders, {refunded} of them refunded, "
        f"{len(both)} still captured{_examples(both)}",
    )


def _check_emails(snapshot: Snapshot) -> Check:
    kinds: dict[str, Counter[str]] = {}
    for row in snapshot.emails:
        kinds.setdefault(row["order_id"], Counter())[row["kind"]] += 1
    wrong = []
    for order_id, row in snapshot.orders.items():
        sent = kinds.get(order_id, Counter())
        failure_mails = 1 if row["status"] == "payment_failed" else 0
        if sent[CONFIRMATION_MAIL] != 1 or sent[PAYMENT_FAILED_MAIL] != failure_mails:
            wrong.append(order_id)
    totals = Counter(row["kind"] for row in snapshot.emails)
    return Check(
        "one confirmation e-mail per order, one failure e-mail per declined order",
        not wrong,
        f"{totals[CONFIRMATION_MAIL]} confirmations and {totals[PAYMENT_FAILED_MAIL]} "
        f"payment-failed e-mails for {len(snapshot.orders)} orders, {len(wrong)} orders "
        f"with a wrong count{_examples(wrong)}",
    )


def _check_mail_files(system: ChaosSystem, snapshot: Snapshot) -> Check:
    expected = {eml_file_name(row["message_id"]) for row in snapshot.emails}
    present = {path.name for path in system.mail_dir.glob("*.eml")}
    missing = expected - present
    extra = present - expected
    return Check(
        "one .eml file per e-mail row",
        not missing and not extra,
        f"{len(snapshot.emails)} e-mail rows, {len(present)} files, {len(missing)} missing, "
        f"{len(extra)} without a row{_examples(missing | extra)}",
    )


def _check_invoices(system: ChaosSystem, snapshot: Snapshot) -> Check:
    missing_rows = [order_id for order_id in snapshot.orders if order_id not in snapshot.invoices]
    missing_files = [
        order_id
        for order_id, file_name in snapshot.invoices.items()
        if not (system.invoice_dir / file_name).is_file()
    ]
    return Check(
        "one invoice row and PDF per order",
        not missing_rows and not missing_files,
        f"{len(snapshot.invoices)} invoice rows for {len(snapshot.orders)} orders, "
        f"{len(missing_rows)} orders without one, {len(missing_files)} PDFs missing"
        f"{_examples(missing_rows + missing_files)}",
    )


def _check_analytics(snapshot: Snapshot, poisoned: set[str]) -> Check:
    expected = set(snapshot.orders) - poisoned
    counted = set(snapshot.counted)
    wrong_amount = [
        order_id
        for order_id, amount in snapshot.counted.items()
        if order_id in snapshot.orders and snapshot.orders[order_id]["total_amount"] != amount
    ]
    counted_total = sum(snapshot.counted.values(), Decimal(0))
    counted_units = sum(
        item["quantity"] for order_id in counted for item in snapshot.items.get(order_id, [])
    )
    daily = snapshot.daily
    products = snapshot.products
    assert daily is not None and products is not None
    totals_match = (
        int(daily["orders"]) == len(counted)
        and Decimal(daily["revenue"]) == counted_total
        and int(daily["units"]) == counted_units
        and Decimal(products["revenue"]) == counted_total
        and int(products["units"]) == counted_units
    )
    passed = counted == expected and not wrong_amount and totals_match
    return Check(
        "analytics count each order once and their totals add up",
        passed,
        f"{len(counted)} orders counted of {len(expected)} expected "
        f"({len(expected - counted)} missing, {len(counted & poisoned)} poisoned counted); "
        f"daily totals {daily['orders']} orders, {daily['units']} units, {daily['revenue']} "
        f"against the counted {len(counted)}, {counted_units}, {counted_total}; per-product "
        f"{products['units']} units, {products['revenue']}"
        f"{_examples(list(expected ^ counted) + wrong_amount)}",
    )


def _check_shipments(snapshot: Snapshot) -> Check:
    shipped = {order_id for order_id, row in snapshot.orders.items() if row["status"] == "shipped"}
    shipments = set(snapshot.shipments)
    unpaid = [
        order_id
        for order_id in shipments
        if snapshot.orders[order_id]["status"] in {"cancelled", "payment_failed"}
    ]
    wrong_tracking = [
        order_id
        for order_id in shipped & shipments
        if snapshot.orders[order_id]["tracking_number"] != snapshot.shipments[order_id]
    ]
    return Check(
        "one shipment per shipped order, none for cancelled or unpaid ones",
        shipped == shipments and not wrong_tracking,
        f"{len(shipped)} shipped orders, {len(shipments)} shipments, "
        f"{len(shipped - shipments)} shipped without one, {len(unpaid)} for cancelled or "
        f"unpaid orders, {len(wrong_tracking)} tracking numbers differ"
        f"{_examples(list(shipped ^ shipments) + wrong_tracking)}",
    )


def _check_stock(system: ChaosSystem, snapshot: Snapshot) -> Check:
    reserved_units: Counter[str] = Counter()
    leaked = []
    for row in snapshot.reservations:
        if row["released_at"] is None:
            reserved_units[row["product_id"]] += row["quantity"]
            if snapshot.orders[row["order_id"]]["status"] in {"cancelled", "payment_failed"}:
                leaked.append(row["order_id"])
    unbalanced = [
        product
        for product, initial in system.initial_stock.items()
        if initial - reserved_units[product] != snapshot.stock.get(product)
    ]
    released = sum(row["released_at"] is not None for row in snapshot.reservations)
    return Check(
        "stock is conserved: initial minus held reservations equals stock",
        not unbalanced and not leaked,
        f"{len(system.initial_stock)} products, {len(unbalanced)} unbalanced; "
        f"{len(snapshot.reservations)} reservations, {released} released, "
        f"{len(leaked)} still held by cancelled or declined orders"
        f"{_examples(unbalanced + leaked)}",
    )


async def _dead_letter_fields(system: ChaosSystem) -> list[dict[str, str]]:
    letters = []
    for tier in Tier:
        for _, fields in await system.read_stream(system.tiers.dead_letter_stream(tier)):
            letters.append(
                {key.decode(): value.decode(errors="replace") for key, value in fields.items()}
            )
    return letters


async def _check_dead_letters(facts: RunFacts, snapshot: Snapshot) -> Check:
    prefix = DEAD_LETTER_FIELD_PREFIX
    injected = facts.injected
    poison_events = {
        event_id_for("OrderCreated", order_id) for order_id in injected.poison_order_ids
    }
    malformed: Counter[str] = Counter()
    poison_seen: set[str] = set()
    poison_letters = 0
    other: list[str] = []
    for fields in await _dead_letter_fields(facts.system):
        group = fields.get(f"{prefix}group", "")
        if fields.get(f"{prefix}entry-id") == injected.malformed_entry_id:
            malformed[group] += 1
        elif group == facts.poison_group and fields.get("event_id") in poison_events:
            poison_seen.add(fields["event_id"])
            poison_letters += 1
        else:
            other.append(f"{group}:{fields.get('type', '?')}:{fields.get('order_id', '?')}")
    malformed_ok = injected.malformed_entry_id is not None and malformed == Counter(
        dict.fromkeys(injected.malformed_groups, 1)
    )
    passed = malformed_ok and poison_seen == poison_events and not other
    return Check(
        "dead letters are exactly the injected bad entries",
        passed,
        f"malformed entry dead-lettered {dict(malformed)} (expected once by each of "
        f"{', '.join(injected.malformed_groups)}); {len(poison_seen)} of "
        f"{len(poison_events)} poison events dead-lettered by {facts.poison_group} "
        f"({poison_letters} letters); {len(other)} other dead letters"
        f"{_examples(other)}",
    )


async def _check_streams(system: ChaosSystem, injected: Injected) -> Check:
    client = system.redis()
    pending: dict[str, int] = {}
    dead_consumer_left = 0
    try:
        for stream in system.tiers.all_streams():
            for info in await client.xinfo_groups(stream):
                group = as_text(info["name"])
                pending[f"{stream}/{group}"] = int(info["pending"])
                for consumer in await client.xinfo_consumers(stream, group):
                    if as_text(consumer["name"]) == DEAD_CONSUMER:
                        dead_consumer_left += int(consumer["pending"])
    finally:
        await client.aclose()
    left = {name: count for name, count in pending.items() if count}
    return Check(
        "no stream entry is left pending",
        not left and dead_consumer_left == 0,
        f"{len(pending)} groups, pending {left or 0}, "
        f"{dead_consumer_left} of the {len(injected.dead_consumer_entries)} entries read by "
        f"{DEAD_CONSUMER!r} still pending on it",
    )


def _check_gateway_errors(load: LoadRecord) -> Check:
    statuses = Counter(error.status for error in load.server_errors)
    without_header = sum(error.status == 503 for error in load.server_errors)
    examples = [f"{e.method} {e.path} {e.status}" for e in load.server_errors[:EXAMPLES]]
    return Check(
        "the gateway answered no 5xx but 503 with Retry-After",
        not load.server_errors,
        f"{len(load.shed)} answers 503 with Retry-After, other 5xx: {dict(statuses) or 0} "
        f"({without_header} of them 503 without Retry-After)"
        + (f"; e.g. {'; '.join(examples)}" if examples else ""),
    )


def _check_processes(unexpected_exits: dict[str, list[int]]) -> Check:
    exits = {name: codes for name, codes in unexpected_exits.items() if codes}
    return Check(
        "no process exited unless killed",
        not exits,
        f"unexpected exits (exit codes): {exits or 'none'}",
    )
