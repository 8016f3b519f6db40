"""serving_records: one row per load level (a concurrency or a request rate) of a serving run

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

LATENCIES = ('serving_ttft_ms', 'serving_tpot_ms', 'serving_itl_ms', 'serving_e2e_ms')


def upgrade() -> None:
    op.create_table(
        'serving_records',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('level', sa.Double(), nullable=False),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('completed', sa.Integer(), nullable=False),
        sa.Column('failed_requests', sa.Integer(), nullable=False),
        sa.Column('not_sent', sa.Integer(), nullable=True),
        sa.Column('failures', sa.JSON(none_as_null=True), nullable=True),
        sa.Column('duration_s', sa.Double(), nullable=False),
        sa.Column('input_tokens', sa.Integer(), nullable=True),
        sa.Column('output_tokens', sa.Integer(), nullable=True),
        sa.Column('token_source', sa.String(length=16), nullable=True),
        sa.Column('exact_output_share', sa.Double(), nullable=True),
        *(sa.Column(f'{name}{q}', sa.Double(), nullable=True) for name in LATENCIES for q in ('', '_p90', '_p99')),
        sa.Column('request_throughput', sa.Double(), nullable=True),
        sa.Column('output_throughput', sa.Double(), nullable=True),
        sa.Column('goodput', sa.Double(), nullable=True),
        sa.Column('raw', sa.JSON(none_as_null=True), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_serving_records_run_id_runs'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_serving_records')),
        sa.UniqueConstraint('run_id', 'mode', 'level', name=op.f('uq_serving_records_run_id')))
    with op.batch_alter_table('serving_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_serving_records_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_table('serving_records')
