"""Input bounds: money columns are BIGINT; webhook deliveries keep their raw bytes and count what was unreadable.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # QuickBooks amounts reach 9,999,999,999.99: in cents, far beyond a 32-bit INTEGER.
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.alter_column("total_cents", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=False)
        batch_op.alter_column("balance_cents", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=True)

    # The exact bytes Intuit signed: text cannot hold NUL (PostgreSQL) nor bytes that are not UTF-8. Bodies
    # stored so far were UTF-8 text and become its bytes.
    if op.get_context().dialect.name == "postgresql":
        op.alter_column(
            "quickbooks_webhook_delivery",
            "body",
            existing_type=sa.Text(),
            type_=sa.LargeBinary(),
            existing_nullable=False,
            postgresql_using="convert_to(body, 'UTF8')",
        )
    else:
        with op.batch_alter_table("quickbooks_webhook_delivery", schema=None) as batch_op:
            batch_op.alter_column("body", existing_type=sa.Text(), type_=sa.LargeBinary(), existing_nullable=False)
        # SQLite keeps each value's own type: make the old text values bytes too.
        op.execute("UPDATE quickbooks_webhook_delivery SET body = CAST(body AS BLOB) WHERE typeof(body) = 'text'")
    with op.batch_alter_table("quickbooks_webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unreadable_count", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("quickbooks_webhook_delivery", schema=None) as batch_op:
        batch_op.drop_column("unreadable_count")
    # Fails (rather than lose bytes) while a kept body is not UTF-8 text without NUL.
    if op.get_context().dialect.name == "postgresql":
        op.alter_column(
            "quickbooks_webhook_delivery",
            "body",
            existing_type=sa.LargeBinary(),
            type_=sa.Text(),
            existing_nullable=False,
            postgresql_using="convert_from(body, 'UTF8')",
        )
    else:
        with op.batch_alter_table("quickbooks_webhook_delivery", schema=None) as batch_op:
            batch_op.alter_column("body", existing_type=sa.LargeBinary(), type_=sa.Text(), existing_nullable=False)
        op.execute("UPDATE quickbooks_webhook_delivery SET body = CAST(body AS TEXT) WHERE typeof(body) = 'blob'")
    # Fails (rather than truncate) if an amount no longer fits.
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.alter_column("balance_cents", existing_type=sa.BigInteger(), type_=sa.Integer(), nullable=True)
        batch_op.alter_column("total_cents", existing_type=sa.BigInteger(), type_=sa.Integer(), nullable=False)
