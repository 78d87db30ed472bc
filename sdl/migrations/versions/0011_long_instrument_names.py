"""instrument names up to 255 characters: a table pool is named by its path

``pool:/data/campaigns/2026/screen.csv`` did not fit the 60 characters of the instrument
columns, nor a worker's id (``HOST:PID:INSTRUMENT``) its 120 (PostgreSQL refused the row;
SQLite does not check lengths). Batch mode, so that
SQLite, which cannot alter a column's type, copies each table.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

#: (table, whether the column is nullable)
COLUMNS = (("svc_queue", False), ("svc_instruments", False), ("svc_workers", False), ("svc_campaigns", False),
           ("svc_usage", False), ("wf_tasks", False))


#: (table, worker-id column, whether it is nullable)
WORKER_COLUMNS = (("svc_queue", "worker", True), ("svc_workers", "id", False), ("wf_tasks", "worker", True))


def _retype(old: int, new: int, old_worker: int, new_worker: int) -> None:
    for table, nullable in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("instrument", existing_type=sa.String(old), type_=sa.String(new),
                               existing_nullable=nullable)
            for t, column, null in WORKER_COLUMNS:
                if t == table:
                    batch.alter_column(column, existing_type=sa.String(old_worker), type_=sa.String(new_worker),
                                       existing_nullable=null)


def upgrade() -> None:
    _retype(60, 255, 120, 400)


def downgrade() -> None:
    _retype(255, 60, 400, 120)
