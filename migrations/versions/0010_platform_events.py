"""Outbound events are kept: each event sent to the platform, its per-subject sequence, the exact body sent and how
delivering it went, so the platform can list and redeliver them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table(
        "platform_event",
        sa.Column("id", text(length=40), nullable=False),
        sa.Column("source_key", sa.Text(), nullable=False),
        sa.Column("type", text(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("account_id", text(length=64), nullable=False),
        sa.Column("invoice_id", text(length=64), nullable=True),
        sa.Column("subject_kind", text(length=16), nullable=False),
        sa.Column("subject_id", text(length=64), nullable=False),
        sa.Column("chain", text(length=64), nullable=False),
        sa.Column("chain_sequence", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", text(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeliveries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "account_id", "subject_kind", "subject_id", "sequence", name="uq_platform_event_subject_sequence"
        ),
    )
    with op.batch_alter_table("platform_event", schema=None) as batch_op:
        batch_op.create_index("ix_platform_event_account", ["account_id", "occurred_at"], unique=False)
        batch_op.create_index("ix_platform_event_occurred", ["occurred_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("platform_event", schema=None) as batch_op:
        batch_op.drop_index("ix_platform_event_occurred")
        batch_op.drop_index("ix_platform_event_account")
    op.drop_table("platform_event")
