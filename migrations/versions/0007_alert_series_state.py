"""alert_series_state: where alert judging stopped per job and device pair, and alert_series_snapshot, where it
stood every few runs; alerts.level for serving series

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'alert_series_state',
        sa.Column('fingerprint', sa.String(length=16), nullable=False),
        sa.Column('candidate_device', sa.String(length=32), nullable=False),
        sa.Column('baseline_device', sa.String(length=32), nullable=False),
        sa.Column('data', sa.JSON(none_as_null=True), nullable=False),
        sa.PrimaryKeyConstraint('fingerprint', 'candidate_device', 'baseline_device',
                                name=op.f('pk_alert_series_state')))
    op.create_table(
        'alert_series_snapshot',
        sa.Column('fingerprint', sa.String(length=16), nullable=False),
        sa.Column('candidate_device', sa.String(length=32), nullable=False),
        sa.Column('baseline_device', sa.String(length=32), nullable=False),
        sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('pushed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('data', sa.JSON(none_as_null=True), nullable=False),
        sa.PrimaryKeyConstraint('fingerprint', 'candidate_device', 'baseline_device', 'seq',
                                name=op.f('pk_alert_series_snapshot')))
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('level', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('level')
    op.drop_table('alert_series_snapshot')
    op.drop_table('alert_series_state')
