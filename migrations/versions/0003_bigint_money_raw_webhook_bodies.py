"""Input bounds: money columns are BIGINT.

Revision ID: 0003_bigint_money_raw_webhooks
Revises: 0002
Create Date: 2026-11-25 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003_bigint_money_raw_webhooks"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # QuickBooks amounts reach 9,999,999,999.99: in cents, far beyond a 32-bit INTEGER.
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.alter_column("total_cents", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=False)
        batch_op.alter_column("balance_cents", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    # Fails (rather than truncate) if an amount no longer fits.
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.alter_column("balance_cents", existing_type=sa.BigInteger(), type_=sa.Integer(), nullable=True)
        batch_op.alter_column("total_cents", existing_type=sa.BigInteger(), type_=sa.Integer(), nullable=False)
