"""A small, valid PDF of an invoice, for `GET /invoice/{id}/pdf`."""

from __future__ import annotations

from typing import Any

from emulator.store import Company


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace("(", "\\(")
        .replace(")", "\\)")
        .encode("latin-1", "replace")
        .decode("latin-1")
    )


def invoice_pdf(company: Company, invoice: dict[str, Any]) -> bytes:
    rows = [
        company.name,
        f"INVOICE {invoice.get('DocNumber', invoice['Id'])}",
        f"Bill to: {invoice.get('CustomerRef', {}).get('name', '')}",
        f"Date: {invoice.get('TxnDate', '')}    Due: {invoice.get('DueDate', '')}",
        "",
    ]
    for line in invoice.get("Line", []):
        if line.get("DetailType") == "SalesItemLineDetail":
            rows.append(
                f"{line.get('Description') or line['SalesItemLineDetail']['ItemRef'].get('name', '')}"
                f"    {line.get('Amount')}"
            )
    rows += ["", f"Total: {invoice.get('TotalAmt')}", f"Balance due: {invoice.get('Balance')}"]
    text = "BT /F1 12 Tf 56 780 Td 16 TL " + " ".join(f"({_escape(row)}) '" for row in rows) + " ET"
    stream = text.encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
