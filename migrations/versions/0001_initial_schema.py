"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('fingerprint', sa.String(length=16), nullable=False),
    sa.Column('job_name', sa.String(length=200), nullable=False),
    sa.Column('model_name', sa.String(length=300), nullable=False),
    sa.Column('dtype', sa.String(length=16), nullable=False),
    sa.Column('tensor_parallel', sa.Integer(), nullable=False),
    sa.Column('device_class', sa.String(length=32), nullable=False),
    sa.Column('device_type', sa.String(length=8), nullable=False),
    sa.Column('device_name', sa.String(length=200), nullable=True),
    sa.Column('device_count', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('imported_from', sa.Text(), nullable=True),
    sa.Column('missing', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pushed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('environment', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('spec', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('token_probe', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('extra', sa.JSON(none_as_null=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_fingerprint_device_finished', ['fingerprint', 'device_class', 'finished_at'], unique=False)

    op.create_table('accuracy_records',
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('problems', sa.Integer(), nullable=False),
    sa.Column('samples_per_problem', sa.Integer(), nullable=True),
    sa.Column('passed', sa.Integer(), nullable=False),
    sa.Column('pass_at_1', sa.Double(), nullable=True),
    sa.Column('pass_at_k', sa.JSON(none_as_null=True), nullable=False),
    sa.Column('generation_s', sa.Double(), nullable=True),
    sa.Column('execution_s', sa.Double(), nullable=True),
    sa.Column('batch_agreement', sa.JSON(none_as_null=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_accuracy_records_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_accuracy_records'))
    )
    op.create_table('perf_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('batch_size', sa.Integer(), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('new_tokens', sa.Integer(), nullable=True),
    sa.Column('warmup', sa.Integer(), nullable=True),
    sa.Column('repeats', sa.Integer(), nullable=True),
    sa.Column('ttft_ms', sa.Double(), nullable=True),
    sa.Column('ttft_ms_p10', sa.Double(), nullable=True),
    sa.Column('ttft_ms_p90', sa.Double(), nullable=True),
    sa.Column('e2e_ms', sa.Double(), nullable=True),
    sa.Column('tpot_ms', sa.Double(), nullable=True),
    sa.Column('first_token_tokens_per_s', sa.Double(), nullable=True),
    sa.Column('first_token_tokens_per_s_p10', sa.Double(), nullable=True),
    sa.Column('first_token_tokens_per_s_p90', sa.Double(), nullable=True),
    sa.Column('decode_tokens_per_s', sa.Double(), nullable=True),
    sa.Column('decode_tokens_per_s_p10', sa.Double(), nullable=True),
    sa.Column('decode_tokens_per_s_p90', sa.Double(), nullable=True),
    sa.Column('raw', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('peak_memory_bytes', sa.BigInteger(), nullable=True),
    sa.Column('bandwidth_gbps', sa.Double(), nullable=True),
    sa.Column('bandwidth_util', sa.Double(), nullable=True),
    sa.Column('cpu_own_cores', sa.Double(), nullable=True),
    sa.Column('cpu_other_cores', sa.Double(), nullable=True),
    sa.Column('cpu_contention', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_perf_records_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_perf_records')),
    sa.UniqueConstraint('run_id', 'batch_size', name=op.f('uq_perf_records_run_id'))
    )
    with op.batch_alter_table('perf_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_perf_records_run_id'), ['run_id'], unique=False)

    op.create_table('problem_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('sample', sa.Integer(), nullable=False),
    sa.Column('completion', sa.Text(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('verdict', sa.Text(), nullable=False),
    sa.Column('generated_tokens', sa.Integer(), nullable=True),
    sa.Column('generation_s', sa.Double(), nullable=True),
    sa.Column('exec_s', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_problem_results_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_problem_results')),
    sa.UniqueConstraint('run_id', 'task_id', 'sample', name=op.f('uq_problem_results_run_id'))
    )
    with op.batch_alter_table('problem_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_problem_results_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('problem_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_problem_results_run_id'))

    op.drop_table('problem_results')
    with op.batch_alter_table('perf_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_perf_records_run_id'))

    op.drop_table('perf_records')
    op.drop_table('accuracy_records')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_fingerprint_device_finished')

    op.drop_table('runs')
