"""Connection health and disconnecting: CDC watermark, health checks, Disconnect & Void progress.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 17:02:17.841995
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qbo_sync_token", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("disconnect_outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )

    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_health_check_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cdc_watermark", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cdc_last_sweep_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("cdc_caught_total", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("disconnect_mode", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=True)
        )
        batch_op.add_column(sa.Column("disconnect_total", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("disconnect_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("disconnect_finished_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quickbooks_connection", schema=None) as batch_op:
        batch_op.drop_column("disconnect_finished_at")
        batch_op.drop_column("disconnect_started_at")
        batch_op.drop_column("disconnect_total")
        batch_op.drop_column("disconnect_mode")
        batch_op.drop_column("cdc_caught_total")
        batch_op.drop_column("cdc_last_sweep_at")
        batch_op.drop_column("cdc_watermark")
        batch_op.drop_column("last_health_check_at")

    with op.batch_alter_table("invoice_sync", schema=None) as batch_op:
        batch_op.drop_column("disconnect_outcome")
        batch_op.drop_column("qbo_sync_token")
