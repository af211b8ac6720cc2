import re
import ssl
from decimal import Decimal
from email import message_from_bytes
from email.policy import default as default_policy

import aiosmtplib
import pytest

from services.notifications import mail
from services.notifications.invoice import InvoiceLine
from services.notifications.mail import (
    MailDeliveryError,
    build_confirmation,
    build_payment_failed,
    message_id_for,
)

pytestmark = pytest.mark.timeout(10)

SENDER = "orders@orderflow.local"
DOMAIN = "orderflow.local"
CUSTOMER = "customer@example.com"
LINES = (
    InvoiceLine("prod-1", "Laptop", 1, Decimal("1200.00")),
    InvoiceLine("prod-2", "Mouse", 2, Decimal("25.00")),
)


def test_build_confirmation_sets_headers_when_order_valid() -> None:
    message = build_confirmation("ORD-1", CUSTOMER, LINES, Decimal("1250.00"), SENDER, DOMAIN)

    assert message["From"] == SENDER
    assert message["To"] == CUSTOMER
    assert message["Subject"] == "Order confirmation ORD-1"
    assert message["Message-ID"] == "<order-confirmation.ORD-1@orderflow.local>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None
    assert message.get_content_type() == "text/plain"


def test_build_confirmation_lists_lines_when_order_valid() -> None:
    message = build_confirmation("ORD-1", CUSTOMER, LINES, Decimal("1250.00"), SENDER, DOMAIN)

    body = message.get_content()

    assert "ORD-1" in body
    assert "1 x Laptop (prod-1) at 1,200.00 = 1,200.00" in body
    assert "2 x Mouse (prod-2) at 25.00 = 50.00" in body
    assert "Total: 1,250.00" in body


def test_build_confirmation_keeps_message_id_when_built_twice() -> None:
    first = build_confirmation("ORD-7", CUSTOMER, LINES, Decimal("1250.00"), SENDER, DOMAIN)
    second = build_confirmation("ORD-7", CUSTOMER, LINES, Decimal("1250.00"), SENDER, DOMAIN)

    assert first["Message-ID"] == second["Message-ID"]


def test_message_id_unique_per_kind_and_order() -> None:
    confirmation = message_id_for("ORD-7", "order-confirmation", DOMAIN)
    payment_failed = build_payment_failed("ORD-7", CUSTOMER, "card declined", SENDER, DOMAIN)
    other_order = message_id_for("ORD-8", "order-confirmation", DOMAIN)

    assert payment_failed["Message-ID"] == "<payment-failed.ORD-7@orderflow.local>"
    assert confirmation != payment_failed["Message-ID"]
    assert confirmation != other_order


def test_build_payment_failed_states_reason_when_reason_multiline() -> None:
    message = build_payment_failed("ORD-2", CUSTOMER, "card\r\ndeclined", SENDER, DOMAIN)

    body = message.get_content()

    assert message["Subject"] == "Payment failed for order ORD-2"
    assert "The payment for your order ORD-2 failed: card declined" in body


def test_build_confirmation_encodes_body_when_name_non_ascii() -> None:
    lines = (InvoiceLine("prod-3", "東京 Tea set", 1, Decimal("9.50")),)
    message = build_confirmation("ORD-3", CUSTOMER, lines, Decimal("9.50"), SENDER, DOMAIN)

    parsed = message_from_bytes(message.as_bytes(), policy=default_policy)

    assert "東京 Tea set" in parsed.get_content()


@pytest.mark.parametrize("order_id", ["ORD-1>", "ORD-1@x", "ORD-1\r\nBcc: x@example.com", ""])
def test_build_confirmation_raises_when_order_id_invalid(order_id: str) -> None:
    with pytest.raises(ValueError, match="invalid order id"):
        build_confirmation(order_id, CUSTOMER, LINES, Decimal("1250.00"), SENDER, DOMAIN)


@pytest.mark.parametrize("domain", ["", "bad domain", "a>b", "example.com\r\n", "-example.com"])
def test_build_payment_failed_raises_when_domain_invalid(domain: str) -> None:
    with pytest.raises(ValueError, match="invalid mail domain"):
        build_payment_failed("ORD-1", CUSTOMER, "card declined", SENDER, domain)


def test_build_confirmation_raises_when_address_injects_header() -> None:
    with pytest.raises(ValueError):
        build_confirmation(
            "ORD-1",
            "customer@example.com\r\nBcc: other@example.com",
            LINES,
            Decimal("1250.00"),
            SENDER,
            DOMAIN,
        )


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (aiosmtplib.SMTPConnectError("refused"), False),
        (aiosmtplib.SMTPConnectTimeoutError("timed out"), False),
        (aiosmtplib.SMTPConnectResponseError(554, "go away"), False),
        (aiosmtplib.SMTPReadTimeoutError("timed out"), False),
        (aiosmtplib.SMTPServerDisconnected("lost"), False),
        (aiosmtplib.SMTPSenderRefused(553, "bad sender", SENDER), True),
        (aiosmtplib.SMTPDataError(451, "try later"), False),
        (aiosmtplib.SMTPDataError(554, "rejected"), True),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, "no such user", CUSTOMER)]
            ),
            True,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(450, "mailbox busy", CUSTOMER)]
            ),
            False,
        ),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported"), True),
        (aiosmtplib.SMTPException("unexpected"), False),
        (ssl.SSLError("certificate verify failed"), False),
        (ConnectionResetError("reset by peer"), False),
        (ValueError("No recipient headers provided in message"), True),
    ],
)
async def test_send_message_translates_error_when_smtp_fails(
    monkeypatch: pytest.MonkeyPatch, error: Exception, permanent: bool
) -> None:
    async def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(aiosmtplib, "send", fail)
    message = build_payment_failed("ORD-1", CUSTOMER, "card declined", SENDER, DOMAIN)

    with pytest.raises(MailDeliveryError, match=re.escape("smtp.example.test:2525")) as raised:
        await mail.send_message(message, "smtp.example.test", 2525, 1.0)

    assert raised.value.__cause__ is error
    assert raised.value.permanent is permanent
