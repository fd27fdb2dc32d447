"""The QuickBooks company's name, read from CompanyInfo when the OAuth callback verifies the company.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quickbooks_grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("company_name", sa.Text(), nullable=True))

    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("company_name", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.drop_column("company_name")

    with op.batch_alter_table("quickbooks_grant", schema=None) as batch_op:
        batch_op.drop_column("company_name")
