"""The company check: each connection keeps its company's settings and the check's findings, and an account
chooses its own tax codes per company (for lines without tax, and per rate).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 13:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("company_settings", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("company_checks", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("company_blocked_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("company_checked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("company_stale", sa.Boolean(), nullable=False, server_default=sa.text("false"))
        )
    op.create_table(
        "quickbooks_tax_default",
        sa.Column("account_id", sa.String(length=64), sa.ForeignKey("account.id"), nullable=False),
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("rate", sa.String(length=16), nullable=False),
        sa.Column("tax_code_id", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "realm_id", "rate"),
    )


def downgrade() -> None:
    op.drop_table("quickbooks_tax_default")
    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.drop_column("company_stale")
        batch_op.drop_column("company_checked_at")
        batch_op.drop_column("company_blocked_reason")
        batch_op.drop_column("company_checks")
        batch_op.drop_column("company_settings")
