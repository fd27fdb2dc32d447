"""Workflow ids are stored with their invoices and connections: those started before ids were made injective
(`invoice-{account}-{invoice}`, `connection-{account}`) keep running under their old ids, and are reached there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workflow_id", sa.Text(), nullable=True))
    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workflow_id", sa.Text(), nullable=True))
    # Everything already here was started under the ids of the time.
    op.execute("UPDATE invoice_sync SET workflow_id = 'invoice-' || account_id || '-' || invoice_id")
    op.execute("UPDATE quickbooks_connection SET workflow_id = 'connection-' || account_id")


def downgrade() -> None:
    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.drop_column("workflow_id")
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.drop_column("workflow_id")
