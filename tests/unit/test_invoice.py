import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from services.notifications.invoice import (
    PRODUCT_NAME_MAX_CHARS,
    InvoiceDocument,
    InvoiceLine,
    render_invoice_pdf,
    replace_non_latin1,
    write_invoice,
)

pytestmark = pytest.mark.timeout(30)

SAMPLE_ADDRESS = {
    "street": "123 Main St",
    "city": "San Francisco",
    "state": "CA",
    "postal_code": "94102",
    "country": "USA",
}

NON_LATIN1_NAME = "東京 Tea set — Größe ő “blue” 🙂"


def make_document(
    order_id: str = "ORD-01J9Z3K4M5N6P7Q8R9S0T1V2W3",
    lines: tuple[InvoiceLine, ...] | None = None,
) -> InvoiceDocument:
    if lines is None:
        lines = (
            InvoiceLine("prod-1", "Laptop", 1, Decimal("1200.00")),
            InvoiceLine("prod-2", "Mouse", 2, Decimal("25.00")),
            InvoiceLine("prod-3", NON_LATIN1_NAME, 3, Decimal("10.00")),
        )
    total = sum((line.amount for line in lines), Decimal(0))
    return InvoiceDocument(
        order_id=order_id,
        customer_id="cust-123",
        customer_email="customer@example.com",
        created_at=datetime(2024, 5, 1, 14, 30, tzinfo=UTC),
        shipping_address=SAMPLE_ADDRESS,
        payment_method="credit_card",
        lines=lines,
        total=total,
    )


def extract_text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_render_invoice_pdf_contains_details_when_unicode() -> None:
    document = make_document()

    text = extract_text(render_invoice_pdf(document))

    assert document.order_id in text
    assert "2024-05-01 14:30 UTC" in text
    assert "San Francisco, CA 94102" in text
    assert "Credit card" in text
    for line in document.lines:
        assert replace_non_latin1(line.product_name) in text
    assert "1,200.00" in text
    assert "1,280.00" in text


def test_render_invoice_pdf_is_deterministic_when_rendered_twice() -> None:
    document = make_document()

    assert render_invoice_pdf(document) == render_invoice_pdf(document)


def test_render_invoice_pdf_spans_pages_when_lines_long() -> None:
    long_name = "Extended warranty " * 40 + "x" * 500
    lines = (
        InvoiceLine("prod-long", long_name, 1, Decimal("5.00")),
        *(InvoiceLine(f"prod-{index}", f"Item {index}", 1, Decimal("1.00")) for index in range(80)),
    )
    document = make_document(lines=lines)

    reader = PdfReader(io.BytesIO(render_invoice_pdf(document)))
    text = "\n".join(page.extract_text() for page in reader.pages)

    assert len(reader.pages) > 1
    assert "Item 79" in text
    assert "85.00" in text
    assert "x" * 10 not in text


def test_replace_non_latin1_keeps_latin1_when_text_mixed() -> None:
    assert replace_non_latin1("Größe café") == "Größe café"
    assert replace_non_latin1("ő Łódź") == "o Lódz"
    assert replace_non_latin1("“quoted” — dash…") == '"quoted" - dash...'
    assert replace_non_latin1("東京") == "??"
    assert replace_non_latin1("line\nbreak\ttab") == "line break tab"
    assert replace_non_latin1("zero\u200bwidth") == "zerowidth"


def test_replace_non_latin1_returns_latin1_for_any_text() -> None:
    every_plane_sample = "".join(chr(code) for code in range(0, 0x3000, 7)) + "🙂\U0010fffd"

    replaced = replace_non_latin1(every_plane_sample)

    assert max(ord(character) for character in replaced) <= 0xFF


def test_invoice_line_raises_when_quantity_zero() -> None:
    with pytest.raises(ValueError, match="invalid quantity 0"):
        InvoiceLine("prod-1", "Laptop", 0, Decimal("1.00"))


def test_invoice_document_raises_when_total_mismatches() -> None:
    lines = (InvoiceLine("prod-1", "Laptop", 2, Decimal("10.00")),)

    with pytest.raises(ValueError, match=re.escape("does not match the sum of its lines 20.00")):
        InvoiceDocument(
            order_id="ORD-1",
            customer_id="cust-1",
            customer_email="customer@example.com",
            created_at=datetime(2024, 5, 1, tzinfo=UTC),
            shipping_address=SAMPLE_ADDRESS,
            payment_method="credit_card",
            lines=lines,
            total=Decimal("25.00"),
        )


def test_write_invoice_leaves_one_file_when_written_twice(tmp_path: Path) -> None:
    document = make_document()
    folder = tmp_path / "invoices"

    first = write_invoice(document, folder)
    second = write_invoice(document, folder)

    assert first == second == folder / f"{document.order_id}.pdf"
    assert sorted(path.name for path in folder.iterdir()) == [f"{document.order_id}.pdf"]
    assert first.read_bytes() == render_invoice_pdf(document)


@pytest.mark.parametrize(
    "order_id",
    ["ORD-../../etc/passwd", "../ORD-1", "ORD-", "ord-1", "ORD-1/2", "ORD-1 ", "ORD-" + "1" * 101],
)
def test_write_invoice_raises_when_order_id_unsafe(tmp_path: Path, order_id: str) -> None:
    document = make_document(order_id=order_id)

    with pytest.raises(ValueError, match="invalid order id") as raised:
        write_invoice(document, tmp_path)

    assert repr(order_id) in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_render_invoice_pdf_cuts_name_when_over_limit() -> None:
    name = "word " * PRODUCT_NAME_MAX_CHARS
    document = make_document(lines=(InvoiceLine("prod-1", name, 1, Decimal("1.00")),))

    text = extract_text(render_invoice_pdf(document))

    assert "..." in text
    assert text.count("word") < PRODUCT_NAME_MAX_CHARS // len("word ") + 1
