"""Invoice PDF rendering and storage.

The PDF uses fpdf2's built-in Helvetica, which covers Latin-1 only, so text is passed through
`replace_non_latin1` first. Rendering is deterministic: the same document gives the same bytes,
so writing an invoice again after a redelivered event changes nothing.
"""

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from shared.files import write_atomically

ORDER_ID_PATTERN = re.compile(r"ORD-[0-9A-Za-z-]{1,100}")

# Longer product names and IDs are cut so that one table row always fits on a page.
PRODUCT_NAME_MAX_CHARS = 200
PRODUCT_ID_MAX_CHARS = 60

# Column widths in mm: product name, product ID, quantity, unit price, amount. They add up to
# the printable width of an A4 page with fpdf2's default 10 mm margins.
TABLE_COLUMN_WIDTHS_MM = (78.0, 36.0, 18.0, 29.0, 29.0)
TABLE_LINE_HEIGHT_MM = 6.0

# Typographic characters outside Latin-1 that have a readable Latin-1 spelling.
_LATIN1_SPELLINGS = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2022": "*",
        "\u2026": "...",
        "\u20ac": "EUR",
        "\u2122": "(TM)",
        "\u0131": "i",
        "\u0141": "L",
        "\u0142": "l",
        "\u0110": "D",
        "\u0111": "d",
        "\u0152": "OE",
        "\u0153": "oe",
    }
)

_INVOICE_FILE_MODE = 0o644
_LATIN1_MAX_CODE_POINT = 0xFF


@dataclass(frozen=True)
class InvoiceLine:
    """One ordered product with its quantity and price per unit."""

    product_id: str
    product_name: str
    quantity: int
    unit_price: Decimal

    def __post_init__(self) -> None:
        if self.quantity < 1:
            raise ValueError(
                f"invalid quantity {self.quantity} for product {self.product_id!r}: "
                "expected 1 or more"
            )
        if self.unit_price < 0:
            raise ValueError(
                f"invalid unit price {self.unit_price} for product {self.product_id!r}: "
                "expected 0 or more"
            )

    @property
    def amount(self) -> Decimal:
        """Line total: quantity times unit price."""
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class InvoiceDocument:
    """Everything printed on one order's invoice.

    `total` must equal the sum of the line amounts, because an invoice whose lines and total
    disagree must never reach a customer.
    """

    order_id: str
    customer_id: str
    customer_email: str
    created_at: datetime
    shipping_address: dict[str, str]
    payment_method: str
    lines: tuple[InvoiceLine, ...]
    total: Decimal

    def __post_init__(self) -> None:
        if not self.lines:
            raise ValueError(f"invoice for order {self.order_id!r} has no lines")

        line_sum = sum((line.amount for line in self.lines), Decimal(0))
        if line_sum != self.total:
            raise ValueError(
                f"invoice total {self.total} for order {self.order_id!r} does not match "
                f"the sum of its lines {line_sum}: check how the order total is computed"
            )


def validate_order_id(order_id: str) -> None:
    """Raise ValueError unless the order ID is safe to use in file names and Message-IDs."""
    if ORDER_ID_PATTERN.fullmatch(order_id) is None:
        raise ValueError(
            f"invalid order id {order_id!r}: expected 'ORD-' followed by 1 to 100 "
            "ASCII letters, digits or hyphens"
        )


def replace_non_latin1(text: str) -> str:
    """Replace every character outside Latin-1, the range a core PDF font can print.

    Accented letters outside Latin-1 lose their accent (ő becomes o), common typographic
    characters get a plain spelling (an em dash becomes -), and any other character becomes ?.
    Control characters, line breaks included, become spaces, and invisible format characters
    such as a zero-width space are dropped.
    """
    composed = unicodedata.normalize("NFC", text.translate(_LATIN1_SPELLINGS))
    return "".join(_to_latin1_character(character) for character in composed)


def format_money(amount: Decimal) -> str:
    """Format an amount with two decimal places and comma thousands separators (1,250.00)."""
    return f"{amount.quantize(Decimal('0.01')):,.2f}"


def render_invoice_pdf(doc: InvoiceDocument) -> bytes:
    """Render the invoice as a one- or multi-page A4 PDF.

    A naive `created_at` is taken as UTC. Product names longer than PRODUCT_NAME_MAX_CHARS are
    cut and end in "...", and shorter ones wrap inside their table cell.
    """
    pdf = _InvoicePdf(footer_text=f"Invoice {replace_non_latin1(doc.order_id)}")
    created_at = _as_utc(doc.created_at)
    pdf.set_creation_date(created_at)
    pdf.set_title(f"Invoice {replace_non_latin1(doc.order_id)}")
    pdf.set_margins(10, 10, 10)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()

    _draw_heading(pdf, doc, created_at)
    _draw_bill_to(pdf, doc)
    _draw_lines_table(pdf, doc.lines)
    _draw_total(pdf, doc.total)
    return bytes(pdf.output())


def write_invoice(doc: InvoiceDocument, folder: Path) -> Path:
    """Render the invoice and write it to `<folder>/<order_id>.pdf`, returning that path.

    The file is replaced atomically, so a reader sees the previous complete file or the new
    one, never a partial one, and writing the same invoice again leaves one file. The folder
    is created if missing. Raises ValueError for an order ID that is unsafe as a file name.
    """
    validate_order_id(doc.order_id)

    content = render_invoice_pdf(doc)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{doc.order_id}.pdf"
    write_atomically(path, content, _INVOICE_FILE_MODE)
    return path


class _InvoicePdf(FPDF):
    """FPDF with a footer carrying the invoice name and page numbers."""

    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self._footer_text = footer_text

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=8)
        self.cell(0, 5, f"{self._footer_text} - page {self.page_no()} of {{nb}}", align=Align.C)


def _draw_heading(pdf: FPDF, doc: InvoiceDocument, created_at: datetime) -> None:
    pdf.set_font("Helvetica", style="B", size=20)
    pdf.cell(0, 12, "Invoice", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    details = (
        ("Order ID", doc.order_id),
        ("Date", created_at.strftime("%Y-%m-%d %H:%M UTC")),
        ("Payment method", doc.payment_method.replace("_", " ").capitalize()),
        ("Customer ID", doc.customer_id),
    )
    for label, value in details:
        pdf.cell(35, 6, f"{label}:")
        pdf.multi_cell(0, 6, replace_non_latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)


def _draw_bill_to(pdf: FPDF, doc: InvoiceDocument) -> None:
    pdf.set_font("Helvetica", style="B", size=11)
    pdf.cell(0, 7, "Bill to", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    for line in (doc.customer_email, *_format_address(doc.shipping_address)):
        pdf.multi_cell(0, 5, replace_non_latin1(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)


def _format_address(address: dict[str, str]) -> list[str]:
    street = address.get("street", "")
    locality = " ".join(
        part for part in (address.get("state", ""), address.get("postal_code", "")) if part
    )
    city_line = ", ".join(part for part in (address.get("city", ""), locality) if part)
    country = address.get("country", "")
    return [line for line in (street, city_line, country) if line]


def _draw_lines_table(pdf: FPDF, lines: Sequence[InvoiceLine]) -> None:
    right_aligned = (False, False, True, True, True)
    pdf.set_font("Helvetica", size=10)
    with pdf.table(
        col_widths=TABLE_COLUMN_WIDTHS_MM,
        width=sum(TABLE_COLUMN_WIDTHS_MM),
        line_height=TABLE_LINE_HEIGHT_MM,
        text_align=Align.L,
        v_align="TOP",
        repeat_headings=1,
    ) as table:
        headings = table.row()
        for heading, right in zip(
            ("Product", "Product ID", "Quantity", "Unit price", "Amount"),
            right_aligned,
            strict=True,
        ):
            headings.cell(heading, align=Align.R if right else Align.L)

        for line in lines:
            row = table.row()
            cells = (
                _shorten(replace_non_latin1(line.product_name), PRODUCT_NAME_MAX_CHARS),
                _shorten(replace_non_latin1(line.product_id), PRODUCT_ID_MAX_CHARS),
                str(line.quantity),
                format_money(line.unit_price),
                format_money(line.amount),
            )
            for text, right in zip(cells, right_aligned, strict=True):
                row.cell(text, align=Align.R if right else Align.L)


def _draw_total(pdf: FPDF, total: Decimal) -> None:
    label_width = sum(TABLE_COLUMN_WIDTHS_MM[:-1])
    pdf.ln(2)
    pdf.set_font("Helvetica", style="B", size=11)
    pdf.cell(label_width, 8, "Total", align=Align.R)
    # NOTE: orders carry no currency, so amounts are printed without one.
    pdf.cell(TABLE_COLUMN_WIDTHS_MM[-1], 8, format_money(total), align=Align.R)


def _shorten(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 3].rstrip() + "..."


def _to_latin1_character(character: str) -> str:
    if unicodedata.category(character) == "Cc":
        return " "
    if ord(character) <= _LATIN1_MAX_CODE_POINT:
        return character
    if unicodedata.category(character) == "Cf":
        return ""

    base = unicodedata.normalize("NFKD", character)
    without_marks = "".join(part for part in base if not unicodedata.combining(part))
    if without_marks and all(ord(part) <= _LATIN1_MAX_CODE_POINT for part in without_marks):
        return without_marks
    return "?"


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
