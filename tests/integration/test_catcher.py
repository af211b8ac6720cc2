import asyncio
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
import pytest_asyncio

from services.notifications.catcher import MailCatcher, eml_file_name
from services.notifications.invoice import InvoiceLine
from services.notifications.mail import (
    MailDeliveryError,
    build_confirmation,
    build_payment_failed,
    send_message,
)

pytestmark = pytest.mark.timeout(20)

SENDER = "orders@orderflow.local"
DOMAIN = "orderflow.local"
CUSTOMER = "customer@example.com"
TIMEOUT_SECONDS = 5.0
LINES = (InvoiceLine("prod-1", "Laptop", 1, Decimal("1200.00")),)


@pytest_asyncio.fixture
async def catcher(tmp_path: Path) -> AsyncIterator[MailCatcher]:
    mail_catcher = MailCatcher(tmp_path / "mail")
    await mail_catcher.start("127.0.0.1", 0)
    try:
        yield mail_catcher
    finally:
        await mail_catcher.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    # A bound socket that never listens keeps the port taken and refuses connections.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def read_stored(folder: Path) -> dict[str, EmailMessage]:
    stored = {}
    for path in sorted(folder.iterdir()):
        parsed = message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        stored[path.name] = parsed
    return stored


async def test_catcher_overwrites_file_when_message_resent(catcher: MailCatcher) -> None:
    confirmation = build_confirmation(
        "ORD-100", CUSTOMER, LINES, Decimal("1200.00"), SENDER, DOMAIN
    )
    payment_failed = build_payment_failed("ORD-101", CUSTOMER, "card declined", SENDER, DOMAIN)
    resent_confirmation = build_confirmation(
        "ORD-100", CUSTOMER, LINES, Decimal("1200.00"), SENDER, DOMAIN
    )

    for message in (confirmation, payment_failed, resent_confirmation):
        await send_message(message, "127.0.0.1", catcher.port, TIMEOUT_SECONDS)

    stored = read_stored(catcher.folder)
    assert sorted(stored) == [
        "order-confirmation.ORD-100@orderflow.local.eml",
        "payment-failed.ORD-101@orderflow.local.eml",
    ]
    confirmation_copy = stored["order-confirmation.ORD-100@orderflow.local.eml"]
    assert confirmation_copy["Subject"] == "Order confirmation ORD-100"
    assert confirmation_copy["To"] == CUSTOMER
    assert "Total: 1,200.00" in confirmation_copy.get_content()
    failed_copy = stored["payment-failed.ORD-101@orderflow.local.eml"]
    assert failed_copy["Subject"] == "Payment failed for order ORD-101"


async def test_catcher_keeps_both_when_id_missing(
    catcher: MailCatcher,
) -> None:
    for subject in ("first", "second"):
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = CUSTOMER
        message["Subject"] = subject
        message.set_content("no Message-ID header")
        await send_message(message, "127.0.0.1", catcher.port, TIMEOUT_SECONDS)

    stored = read_stored(catcher.folder)

    assert len(stored) == 2
    assert all(name.startswith("no-message-id-") for name in stored)
    assert sorted(message["Subject"] for message in stored.values()) == ["first", "second"]


async def test_catcher_refuses_connections_when_stopped(tmp_path: Path) -> None:
    mail_catcher = MailCatcher(tmp_path / "mail")
    await mail_catcher.start("127.0.0.1", 0)
    port = mail_catcher.port
    await mail_catcher.stop()
    message = build_payment_failed("ORD-102", CUSTOMER, "card declined", SENDER, DOMAIN)

    with pytest.raises(MailDeliveryError):
        await send_message(message, "127.0.0.1", port, TIMEOUT_SECONDS)

    await mail_catcher.stop()


async def test_send_message_raises_when_port_closed(closed_port: int) -> None:
    message = build_payment_failed("ORD-103", CUSTOMER, "card declined", SENDER, DOMAIN)

    with pytest.raises(MailDeliveryError, match=re.escape(f"127.0.0.1:{closed_port}")) as raised:
        await send_message(message, "127.0.0.1", closed_port, TIMEOUT_SECONDS)

    assert "ORDERFLOW_SMTP_PORT" in str(raised.value)
    assert raised.value.__cause__ is not None
    assert raised.value.permanent is False


async def test_send_message_raises_permanent_when_address_invalid(
    catcher: MailCatcher,
) -> None:
    message = build_payment_failed("ORD-104", "not an address", "card declined", SENDER, DOMAIN)

    with pytest.raises(MailDeliveryError, match="customer's e-mail address") as raised:
        await send_message(message, "127.0.0.1", catcher.port, TIMEOUT_SECONDS)

    assert raised.value.permanent is True
    assert list(catcher.folder.iterdir()) == []


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [
        (
            "<order-confirmation.ORD-1@orderflow.local>",
            "order-confirmation.ORD-1@orderflow.local.eml",
        ),
        ("  <a@b>  ", "a@b.eml"),
    ],
)
def test_eml_file_name_keeps_message_id_when_safe(message_id: str, expected: str) -> None:
    assert eml_file_name(message_id) == expected


@pytest.mark.parametrize(
    "message_id", ["<../../etc/passwd@x>", "<a/b@x>", "<.hidden@x>", "<" + "a" * 400 + ">"]
)
def test_eml_file_name_sanitized_when_id_unsafe(message_id: str) -> None:
    name = eml_file_name(message_id)

    assert "/" not in name
    assert not name.startswith(".")
    assert len(name.encode()) <= 200
    assert name == eml_file_name(message_id)


def test_eml_file_name_unique_when_ids_differ() -> None:
    assert eml_file_name("<a/b@x>") != eml_file_name("<a_b@x>")
    assert eml_file_name("<a/b@x>") != eml_file_name("<a\\b@x>")


async def test_run_catcher_exits_when_sigterm_received(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "mail"
    script = (
        "import sys; from pathlib import Path; "
        "from services.notifications.catcher import run_catcher; "
        "run_catcher('127.0.0.1', int(sys.argv[1]), Path(sys.argv[2]))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(port),
        str(folder),
        cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        message = build_payment_failed("ORD-105", CUSTOMER, "card declined", SENDER, DOMAIN)
        await send_when_listening(message, port, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10.0)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert [path.name for path in folder.iterdir()] == [
        "payment-failed.ORD-105@orderflow.local.eml"
    ]


async def send_when_listening(
    message: EmailMessage, port: int, process: asyncio.subprocess.Process
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while True:
        try:
            await send_message(message, "127.0.0.1", port, TIMEOUT_SECONDS)
        except MailDeliveryError:
            if process.returncode is not None or loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            return
