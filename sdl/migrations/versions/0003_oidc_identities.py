"""oidc identities: accounts linked to an OpenID Connect provider's subject

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 17:10:00

svc_identities (sdl/service/db.py IdentityRow): (issuer, subject) -> svc_users.id, for
sign-in through the institution's identity provider (sdl/service/oidc.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('svc_identities',
    sa.Column('issuer', sa.String(length=300), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('email', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['svc_users.id'], ),
    sa.PrimaryKeyConstraint('issuer', 'subject')
    )
    with op.batch_alter_table('svc_identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_svc_identities_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('svc_identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_svc_identities_user_id'))
    op.drop_table('svc_identities')
