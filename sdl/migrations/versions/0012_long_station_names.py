"""workflow stations named up to 255 characters, like the service's instruments (0011)

A station is any registered instrument. Its device lock (``device:<instrument>``, the
primary key of ``wf_resources`` that ``wf_locks`` refers to), a sample's station and position
(``<station> -> <station>`` in transit) and the actor of a sample's event (a worker's id,
``HOST:PID:INSTRUMENT``) had 120, 60, 120 and 160 characters: PostgreSQL refused the row for
an instrument of a long name (SQLite does not check lengths). Batch mode, so that SQLite,
which cannot alter a column's type, copies each table.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

#: table -> [(column, old length, new length)] (sdl.workflows.tables: RESOURCE_NAME_MAX,
#: INSTRUMENT_NAME_MAX, POSITION_MAX, WORKER_ID_MAX)
COLUMNS = {
    "wf_resources": [("name", 120, 300)],
    "wf_locks": [("resource", 120, 300)],
    "wf_samples": [("station", 60, 255), ("position", 120, 520)],
    "wf_sample_events": [("station", 60, 255), ("position", 120, 520), ("actor", 160, 400)],
}


def _retype(up: bool) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, old, new in columns:
                a, b = (old, new) if up else (new, old)
                batch.alter_column(column, existing_type=sa.String(a), type_=sa.String(b), existing_nullable=False)


def upgrade() -> None:
    _retype(True)


def downgrade() -> None:
    _retype(False)
