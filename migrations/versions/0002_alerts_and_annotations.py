"""alerts and annotations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series', sa.String(length=200), nullable=False),
    sa.Column('fingerprint', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('candidate_device', sa.String(length=32), nullable=False),
    sa.Column('baseline_device', sa.String(length=32), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=True),
    sa.Column('opened_candidate_run', sa.String(length=36), nullable=False),
    sa.Column('opened_baseline_run', sa.String(length=36), nullable=False),
    sa.Column('latest_candidate_run', sa.String(length=36), nullable=False),
    sa.Column('latest_baseline_run', sa.String(length=36), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('moved', sa.String(length=64), nullable=True),
    sa.Column('baseline_ratio', sa.Double(), nullable=True),
    sa.Column('ratio', sa.Double(), nullable=True),
    sa.Column('change_pct', sa.Double(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('acknowledged', sa.Boolean(), nullable=False),
    sa.Column('resolved_manually', sa.Boolean(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts')),
    sa.UniqueConstraint('series', 'opened_candidate_run', 'opened_baseline_run', name=op.f('uq_alerts_series'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alerts_series'), ['series'], unique=False)

    op.create_table('annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_annotations_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotations'))
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_annotations_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotations_run_id'))

    op.drop_table('annotations')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_series'))

    op.drop_table('alerts')
