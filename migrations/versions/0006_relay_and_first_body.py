"""Nothing acknowledged is forgotten: invoices keep the body first sent and when their workflow started; grants
and webhook deliveries when their workflows were told. What is still empty after an outage, the API's relay hands
to Temporal.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.add_column(sa.Column("snapshot", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("workflow_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_invoice_sync_workflow_started_at", ["workflow_started_at"], unique=False)
    with op.batch_alter_table("quickbooks_grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signalled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("quickbooks_webhook_delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signalled_at", sa.DateTime(timezone=True), nullable=True))
    # What is already here was handed to Temporal when it arrived (the relay did not exist): it is not again.
    op.execute("UPDATE invoice_sync SET workflow_started_at = sent_at")
    op.execute("UPDATE quickbooks_grant SET signalled_at = created_at")
    op.execute("UPDATE quickbooks_webhook_delivery SET signalled_at = received_at")


def downgrade() -> None:
    with op.batch_alter_table("quickbooks_webhook_delivery", schema=None) as batch_op:
        batch_op.drop_column("signalled_at")
    with op.batch_alter_table("quickbooks_grant", schema=None) as batch_op:
        batch_op.drop_column("signalled_at")
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_sync_workflow_started_at")
        batch_op.drop_column("workflow_started_at")
        batch_op.drop_column("snapshot")
