"""Order e-mails: building them and sending them over SMTP.

Each message gets a Message-ID derived from its order ID and kind, so a message resent after a
crash carries the same Message-ID as the first attempt. The Message-ID is the idempotency key
toward the SMTP side: the development mail catcher stores one file per Message-ID, and a
receiving system can discard the duplicate.
"""

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from services.notifications.invoice import InvoiceLine, format_money, validate_order_id

CONFIRMATION_KIND = "order-confirmation"
PAYMENT_FAILED_KIND = "payment-failed"

_DOMAIN_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PERMANENT_REPLY_CODES = range(500, 600)


class MailDeliveryError(Exception):
    """Sending a message over SMTP failed.

    `permanent` is true when the server rejected the message with a 5xx reply, so sending
    the same message to the same server again is expected to fail the same way.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def build_confirmation(
    order_id: str,
    customer_email: str,
    lines: Sequence[InvoiceLine],
    total: Decimal,
    sender: str,
    domain: str,
) -> EmailMessage:
    """Build the plain-text e-mail that confirms an order, listing its lines and total.

    Raises ValueError for an invalid order ID or domain, or for an address containing a line
    break.
    """
    body_lines = [
        "Hello,",
        "",
        f"Thank you for your order {order_id}. We have received it with these items:",
        "",
        *(_format_line(line) for line in lines),
        "",
        f"Total: {format_money(total)}",
        "",
        "You will receive the invoice separately.",
    ]
    return _build_message(
        kind=CONFIRMATION_KIND,
        order_id=order_id,
        subject=f"Order confirmation {order_id}",
        body="\n".join(body_lines) + "\n",
        recipient=customer_email,
        sender=sender,
        domain=domain,
    )


def build_payment_failed(
    order_id: str, customer_email: str, reason: str, sender: str, domain: str
) -> EmailMessage:
    """Build the plain-text e-mail that notifies a customer that an order's payment failed.

    Raises ValueError for an invalid order ID or domain, or for an address containing a line
    break.
    """
    body_lines = [
        "Hello,",
        "",
        f"The payment for your order {order_id} failed: {_single_line(reason)}",
        "",
        "The order will not be shipped. You can place it again with another payment method.",
    ]
    return _build_message(
        kind=PAYMENT_FAILED_KIND,
        order_id=order_id,
        subject=f"Payment failed for order {order_id}",
        body="\n".join(body_lines) + "\n",
        recipient=customer_email,
        sender=sender,
        domain=domain,
    )


def message_id_for(order_id: str, kind: str, domain: str) -> str:
    """Return the Message-ID for one kind of message about one order.

    The result looks like `<order-confirmation.ORD-123@orders.example.com>`.
    Raises ValueError for an invalid order ID or domain.
    """
    validate_order_id(order_id)
    if _DOMAIN_PATTERN.fullmatch(domain) is None:
        raise ValueError(
            f"invalid mail domain {domain!r}: expected a host name such as 'orderflow.local'"
        )
    return f"<{kind}.{order_id}@{domain}>"


async def send_message(message: EmailMessage, host: str, port: int, timeout_seconds: float) -> None:
    """Send the message to the SMTP server at host:port.

    Sender and recipients come from the message's From and To headers. STARTTLS is used
    when the server offers it. Every failure raises MailDeliveryError, with the aiosmtplib
    or socket error as its cause.
    """
    address = f"{host}:{port}"
    try:
        await aiosmtplib.send(message, hostname=host, port=port, timeout=timeout_seconds)
    except aiosmtplib.SMTPConnectTimeoutError as exc:
        raise MailDeliveryError(
            f"connecting to SMTP server {address} timed out after {timeout_seconds} s: "
            "check that ORDERFLOW_SMTP_HOST and ORDERFLOW_SMTP_PORT name a reachable server"
        ) from exc
    except aiosmtplib.SMTPConnectError as exc:
        raise MailDeliveryError(
            f"could not connect to SMTP server {address}: {exc}. Check that the server is "
            "running and that ORDERFLOW_SMTP_HOST and ORDERFLOW_SMTP_PORT point to it"
        ) from exc
    except aiosmtplib.SMTPTimeoutError as exc:
        raise MailDeliveryError(
            f"SMTP server {address} did not reply within {timeout_seconds} s: "
            "check the server's load, or raise the timeout"
        ) from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [refusal.code for refusal in exc.recipients]
        raise MailDeliveryError(
            f"SMTP server {address} rejected every recipient (reply codes {codes}): "
            "check the customer's e-mail address",
            permanent=all(code in _PERMANENT_REPLY_CODES for code in codes),
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise MailDeliveryError(
            f"SMTP server {address} rejected the message with reply {exc.code} {exc.message}: "
            "check the sender address (ORDERFLOW_MAIL_FROM) and the server's log",
            permanent=exc.code in _PERMANENT_REPLY_CODES,
        ) from exc
    except aiosmtplib.SMTPNotSupported as exc:
        raise MailDeliveryError(
            f"SMTP server {address} does not support what the message needs: {exc}",
            permanent=True,
        ) from exc
    except aiosmtplib.SMTPException as exc:
        raise MailDeliveryError(
            f"sending mail through SMTP server {address} failed: {exc}. "
            "Check that the server is running and its log"
        ) from exc
    except ValueError as exc:
        # aiosmtplib raises ValueError for addresses it cannot put on an SMTP command line and
        # for a message without From or To, before or while talking to the server.
        raise MailDeliveryError(
            f"message not sent to SMTP server {address}: {exc}. "
            "Check the sender address (ORDERFLOW_MAIL_FROM) and the customer's e-mail address",
            permanent=True,
        ) from exc
    except OSError as exc:
        raise MailDeliveryError(
            f"connection to SMTP server {address} failed: {exc}. If the error is about TLS, "
            "check the certificate the server offers for STARTTLS"
        ) from exc


def _build_message(
    *,
    kind: str,
    order_id: str,
    subject: str,
    body: str,
    recipient: str,
    sender: str,
    domain: str,
) -> EmailMessage:
    message = EmailMessage()
    message["Message-ID"] = message_id_for(order_id, kind, domain)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    # RFC 3834: marks the message as sent by a program, so auto-responders do not reply.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


def _format_line(line: InvoiceLine) -> str:
    return (
        f"  {line.quantity} x {_single_line(line.product_name)} ({_single_line(line.product_id)})"
        f" at {format_money(line.unit_price)} = {format_money(line.amount)}"
    )


def _single_line(text: str) -> str:
    return " ".join(text.split())
