"""precision_records: a run's per-layer precision capture (run document format 2), one row per run that has one

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('precision_records',
                    sa.Column('run_id', sa.String(length=36), nullable=False),
                    sa.Column('data', sa.JSON(none_as_null=True), nullable=False),
                    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_precision_records_run_id_runs'),
                                            ondelete='CASCADE'),
                    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_precision_records')))


def downgrade() -> None:
    op.drop_table('precision_records')
