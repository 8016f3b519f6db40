"""job_devices: each job's latest run, run count and recent runs per device class, kept at push; the runs index
carries the whole pairing order (finished_at, pushed_at, id), and a second one that order alone (the newest runs);
perf and problem records lose their run_id index (their unique constraints start with run_id)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Existing runs are summarised in one statement: each job and device's runs ranked newest first in pairing order;
# rank 1 is the latest run, and recent_since is the oldest finished_at among the 21 newest.
FILL = """
INSERT INTO job_devices (fingerprint, device_class, runs, latest_run, latest_finished_at, latest_pushed_at,
                         job_name, model_name, recent_since)
SELECT fingerprint, device_class, max(n), max(CASE WHEN k = 1 THEN id END), max(CASE WHEN k = 1 THEN finished_at END),
       max(CASE WHEN k = 1 THEN pushed_at END), max(CASE WHEN k = 1 THEN job_name END),
       max(CASE WHEN k = 1 THEN model_name END), min(CASE WHEN k <= 21 THEN finished_at END)
FROM (SELECT fingerprint, device_class, id, finished_at, pushed_at, job_name, model_name,
             row_number() OVER (PARTITION BY fingerprint, device_class
                                ORDER BY finished_at DESC, pushed_at DESC, id DESC) AS k,
             count(*) OVER (PARTITION BY fingerprint, device_class) AS n
      FROM runs) ranked
GROUP BY fingerprint, device_class
"""


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_fingerprint_device_finished')
        batch_op.create_index('ix_runs_fingerprint_device_order',
                              ['fingerprint', 'device_class', 'finished_at', 'pushed_at', 'id'], unique=False)
        batch_op.create_index('ix_runs_order', ['finished_at', 'pushed_at', 'id'], unique=False)
    for table in ('perf_records', 'problem_results'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f'ix_{table}_run_id')
    op.create_table('job_devices',
    sa.Column('fingerprint', sa.String(length=16), nullable=False),
    sa.Column('device_class', sa.String(length=32), nullable=False),
    sa.Column('runs', sa.Integer(), nullable=False),
    sa.Column('latest_run', sa.String(length=36), nullable=False),
    sa.Column('latest_finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('latest_pushed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('job_name', sa.String(length=200), nullable=False),
    sa.Column('model_name', sa.String(length=300), nullable=False),
    sa.Column('recent_since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('fingerprint', 'device_class', name=op.f('pk_job_devices'))
    )
    op.execute(FILL)


def downgrade() -> None:
    op.drop_table('job_devices')
    for table in ('perf_records', 'problem_results'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(f'ix_{table}_run_id', ['run_id'], unique=False)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_order')
        batch_op.drop_index('ix_runs_fingerprint_device_order')
        batch_op.create_index('ix_runs_fingerprint_device_finished', ['fingerprint', 'device_class', 'finished_at'],
                              unique=False)
