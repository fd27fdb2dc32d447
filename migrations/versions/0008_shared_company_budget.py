"""The per-company budget every process shares (qbo/company_budget.py): the minute's log of admitted calls, a row
per company (its count, the hold after a throttle), and the functions that admit, release and report a throttle in one round trip each (PostgreSQL only;
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
# budget session for one call. One admission at a time per company: the company's row, locked FOR UPDATE, which
# also keeps how many calls its minute's log holds (so no admission counts the log) and whether anyone found
# every slot taken lately (only then does a release NOTIFY). The IFs are nested because SQL does not promise to
# evaluate AND left to right (a lock must not be taken for a slot the session holds already).
ACQUIRE = """
CREATE OR REPLACE FUNCTION qbo_budget_acquire(
    p_realm text, p_max_in_flight integer, p_per_minute integer, p_window double precision, p_held integer[]
) RETURNS TABLE (slot integer, call_id bigint, wait_seconds double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz;
    v_company qbo_budget_company%ROWTYPE;
    v_gone integer;
    v_used integer;
    v_oldest timestamptz;
    v_slot integer;
    v_id bigint;
    v_window interval := make_interval(secs => p_window);
    v_slots integer := hashtext('qbo-budget-slot:' || p_realm);
BEGIN
    SELECT * INTO v_company FROM qbo_budget_company c WHERE c.realm_id = p_realm FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO qbo_budget_company (realm_id) VALUES (p_realm) ON CONFLICT DO NOTHING;
        SELECT * INTO v_company FROM qbo_budget_company c WHERE c.realm_id = p_realm FOR UPDATE;
    END IF;
    v_now := clock_timestamp();
    IF v_company.hold_until IS NOT NULL AND v_company.hold_until > v_now THEN
        RETURN QUERY SELECT NULL::integer, NULL::bigint,
            extract(epoch FROM v_company.hold_until - v_now)::double precision;
        RETURN;
    END IF;
    DELETE FROM qbo_budget_call c WHERE c.realm_id = p_realm AND c.admitted_at <= v_now - v_window;
    GET DIAGNOSTICS v_gone = ROW_COUNT;
    v_used := greatest(v_company.admitted - v_gone, 0);
    IF v_used >= p_per_minute THEN
        SELECT min(c.admitted_at) INTO v_oldest FROM qbo_budget_call c WHERE c.realm_id = p_realm;
        UPDATE qbo_budget_company c SET admitted = v_used WHERE c.realm_id = p_realm;
        RETURN QUERY SELECT NULL::integer, NULL::bigint,
            extract(epoch FROM coalesce(v_oldest, v_now) + v_window - v_now)::double precision;
        RETURN;
    END IF;
    FOR v_slot IN 0 .. p_max_in_flight - 1 LOOP
        IF NOT (v_slot = ANY (coalesce(p_held, '{}'::integer[]))) THEN
            IF pg_try_advisory_lock(v_slots, v_slot) THEN
                INSERT INTO qbo_budget_call (realm_id, admitted_at) VALUES (p_realm, v_now) RETURNING id INTO v_id;
                UPDATE qbo_budget_company c SET admitted = v_used + 1 WHERE c.realm_id = p_realm;
                RETURN QUERY SELECT v_slot, v_id, 0::double precision;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    UPDATE qbo_budget_company c
    SET admitted = v_used, contended_until = v_now + interval '5 seconds'
    WHERE c.realm_id = p_realm;
    RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::double precision;
END
$$
"""

RELEASE = """
CREATE OR REPLACE FUNCTION qbo_budget_release(p_realm text, p_slot integer, p_channel text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_unlock(hashtext('qbo-budget-slot:' || p_realm), p_slot);
    IF EXISTS (
        SELECT 1 FROM qbo_budget_company c WHERE c.realm_id = p_realm AND c.contended_until > clock_timestamp()
    ) THEN
        PERFORM pg_notify(p_channel, p_realm);
    END IF;
END
$$
"""

THROTTLED = """
CREATE OR REPLACE FUNCTION qbo_budget_throttled(p_realm text, p_call_id bigint, p_pause double precision)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_gone integer;
BEGIN
    PERFORM 1 FROM qbo_budget_company c WHERE c.realm_id = p_realm FOR UPDATE;
    DELETE FROM qbo_budget_call WHERE id = p_call_id;
    GET DIAGNOSTICS v_gone = ROW_COUNT;
    UPDATE qbo_budget_company c
    SET admitted = greatest(c.admitted - v_gone, 0),
        hold_until = greatest(coalesce(c.hold_until, '-infinity'), clock_timestamp() + make_interval(secs => p_pause))
    WHERE c.realm_id = p_realm;
END
$$
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Logged tables (WAL on every call): an UNLOGGED log is emptied by PostgreSQL's crash recovery, and then the
    # budget admits a fresh 500 while Intuit still counts the minute before the crash (the chaos run saw 30 429s).
    op.create_table(
        "qbo_budget_call",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_qbo_budget_call_realm_admitted", "qbo_budget_call", ["realm_id", "admitted_at"])
    op.create_table(
        "qbo_budget_company",
        sa.Column("realm_id", sa.String(length=32), nullable=False),
        sa.Column("admitted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("hold_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("contended_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("realm_id"),
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
    op.drop_table("qbo_budget_company")
    op.drop_index("ix_qbo_budget_call_realm_admitted", table_name="qbo_budget_call")
    op.drop_table("qbo_budget_call")
