"""The per-company budget every process shares (qbo/company_budget.py): the minute's log of admitted calls, the
hold after a throttle, and the two functions that admit and release in one round trip each (PostgreSQL only;
the embedded SQLite default runs one worker, whose own limiter is the budget).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Slot k of a company is the advisory lock (hashtext('qbo-budget-slot:' || realm), k), held by the process's
# budget session for one call. One admission at a time per company: the transaction lock on
# hashtextextended('qbo-budget:' || realm, 0). The one-key and two-key lock spaces do not overlap. The IFs are
# nested because SQL does not promise to evaluate AND left to right (a lock must not be taken for a held slot).
ACQUIRE = """
CREATE OR REPLACE FUNCTION qbo_budget_acquire(
    p_realm text, p_max_in_flight integer, p_per_minute integer, p_window double precision, p_held integer[]
) RETURNS TABLE (slot integer, call_id bigint, wait_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_hold timestamptz;
    v_used integer;
    v_oldest timestamptz;
    v_slot integer;
    v_id bigint;
    v_window interval := make_interval(secs => p_window);
    v_slots integer := hashtext('qbo-budget-slot:' || p_realm);
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('qbo-budget:' || p_realm, 0));
    v_now := clock_timestamp();
    SELECT h.hold_until INTO v_hold FROM qbo_budget_hold h WHERE h.realm_id = p_realm;
    IF v_hold IS NOT NULL AND v_hold > v_now THEN
        RETURN QUERY SELECT NULL::integer, NULL::bigint, extract(epoch FROM v_hold - v_now)::double precision;
        RETURN;
    END IF;
    DELETE FROM qbo_budget_call c WHERE c.realm_id = p_realm AND c.admitted_at <= v_now - v_window;
    SELECT count(*), min(c.admitted_at) INTO v_used, v_oldest FROM qbo_budget_call c WHERE c.realm_id = p_realm;
    IF v_used >= p_per_minute THEN
        RETURN QUERY SELECT NULL::integer, NULL::bigint,
            extract(epoch FROM v_oldest + v_window - v_now)::double precision;
        RETURN;
    END IF;
    FOR v_slot IN 0 .. p_max_in_flight - 1 LOOP
        IF NOT (v_slot = ANY (coalesce(p_held, '{}'::integer[]))) THEN
            IF pg_try_advisory_lock(v_slots, v_slot) THEN
                INSERT INTO qbo_budget_call (realm_id, admitted_at) VALUES (p_realm, v_now) RETURNING id INTO v_id;
                RETURN QUERY SELECT v_slot, v_id, 0::double precision;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::double precision;
END
$$
"""

RELEASE = """
CREATE OR REPLACE FUNCTION qbo_budget_release(p_realm text, p_slot integer, p_channel text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_unlock(hashtext('qbo-budget-slot:' || p_realm), p_slot);
    PERFORM pg_notify(p_channel, p_realm);
END
$$
"""

THROTTLED = """
CREATE OR REPLACE FUNCTION qbo_budget_throttled(p_realm text, p_call_id bigint, p_pause double precision)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM qbo_budget_call WHERE id = p_call_id;
    INSERT INTO qbo_budget_hold (realm_id, hold_until)
    VALUES (p_realm, clock_timestamp() + make_interval(secs => p_pause))
    ON CONFLICT (realm_id) DO UPDATE SET hold_until = greatest(qbo_budget_hold.hold_until, excluded.hold_until);
END
$$
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "qbo_budget_call",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        prefixes=["UNLOGGED"] if postgres else [],
    )
    op.create_index("ix_qbo_budget_call_realm_admitted", "qbo_budget_call", ["realm_id", "admitted_at"])
    op.create_table(
        "qbo_budget_hold",
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("hold_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("realm_id"),
        prefixes=["UNLOGGED"] if postgres else [],
    )
    if postgres:
        op.execute(ACQUIRE)
        op.execute(RELEASE)
        op.execute(THROTTLED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS qbo_budget_throttled(text, bigint, double precision)")
        op.execute("DROP FUNCTION IF EXISTS qbo_budget_release(text, integer, text)")
        op.execute("DROP FUNCTION IF EXISTS qbo_budget_acquire(text, integer, integer, double precision, integer[])")
    op.drop_table("qbo_budget_hold")
    op.drop_index("ix_qbo_budget_call_realm_admitted", table_name="qbo_budget_call")
    op.drop_table("qbo_budget_call")
