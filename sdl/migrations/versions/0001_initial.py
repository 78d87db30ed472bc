"""initial schema: the record (campaigns, suggestions, runs, documents, observations)
and the service (users, tokens, proposals, members, audit, queue, campaigns, usage)

Revision ID: 0001
Revises:
Create Date: 2026-11-20

Written out by hand, table by table, as the models stood when migrations began.
A database that an earlier sdl made with ``create_all`` (no ``alembic_version``
table yet) is adopted: tables that exist are left as they are, missing ones made.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: 64-bit autoincrement ids on PostgreSQL; SQLite autoincrements only INTEGER PRIMARY KEY
BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _tables() -> list[tuple[str, list, list[tuple[str, list[str], bool]]]]:
    """(table, columns and constraints, indexes as (name, columns, unique)), in FK order."""
    return [
        # ------------------------------------------------------------- the record
        ("campaigns", [
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("spec", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            _ts("created_at"),
            _ts("updated_at"),
            sa.PrimaryKeyConstraint("id"),
        ], []),
        ("suggestions", [
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("campaign_id", sa.String(32), nullable=False),
            sa.Column("seq", sa.Integer(), nullable=False),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("provenance", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            _ts("created_at"),
            sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
            sa.PrimaryKeyConstraint("id"),
        ], [("ix_suggestions_campaign_id", ["campaign_id"], False),
            ("ix_suggestions_status", ["status"], False)]),
        ("runs", [
            sa.Column("uid", sa.String(64), nullable=False),
            sa.Column("campaign_id", sa.String(32), nullable=True),
            sa.Column("suggestion_id", sa.String(32), nullable=True),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            _ts("started_at"),
            _ts("finished_at", nullable=True),
            sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
            sa.ForeignKeyConstraint(["suggestion_id"], ["suggestions.id"]),
            sa.PrimaryKeyConstraint("uid"),
        ], [("ix_runs_campaign_id", ["campaign_id"], False),
            ("ix_runs_suggestion_id", ["suggestion_id"], False)]),
        ("documents", [
            sa.Column("id", BigID, autoincrement=True, nullable=False),
            sa.Column("run_uid", sa.String(64), nullable=False),
            sa.Column("name", sa.String(32), nullable=False),
            sa.Column("doc", sa.JSON(), nullable=False),
            sa.ForeignKeyConstraint(["run_uid"], ["runs.uid"]),
            sa.PrimaryKeyConstraint("id"),
        ], [("ix_documents_run_uid", ["run_uid"], False)]),
        ("observations", [
            sa.Column("id", BigID, autoincrement=True, nullable=False),
            sa.Column("campaign_id", sa.String(32), nullable=False),
            sa.Column("suggestion_id", sa.String(32), nullable=True),
            sa.Column("run_uid", sa.String(64), nullable=True),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("values", sa.JSON(), nullable=False),
            sa.Column("ok", sa.Boolean(), nullable=False),
            sa.Column("extra", sa.JSON(), nullable=False),
            _ts("created_at"),
            sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"]),
            sa.ForeignKeyConstraint(["suggestion_id"], ["suggestions.id"]),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("suggestion_id"),
        ], [("ix_observations_campaign_id", ["campaign_id"], False)]),
        # ------------------------------------------------------------ the service
        ("svc_users", [
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("role", sa.String(20), nullable=False),
            sa.Column("email", sa.String(200), nullable=False),
            sa.Column("active", sa.Boolean(), nullable=False),
            _ts("created_at"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("name"),
        ], []),
        ("svc_tokens", [
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("user_id", sa.String(32), nullable=False),
            sa.Column("name", sa.String(100), nullable=False),
            sa.Column("token_hash", sa.String(64), nullable=False),
            sa.Column("prefix", sa.String(12), nullable=False),
            _ts("created_at"),
            _ts("expires_at", nullable=True),
            _ts("revoked_at", nullable=True),
            sa.ForeignKeyConstraint(["user_id"], ["svc_users.id"]),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("token_hash"),
        ], [("ix_svc_tokens_user_id", ["user_id"], False)]),
        ("svc_proposals", [
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("title", sa.String(300), nullable=False),
            sa.Column("abstract", sa.Text(), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("coalition", sa.String(100), nullable=True),
            sa.Column("pi_id", sa.String(32), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("instruments", sa.JSON(), nullable=False),
            sa.Column("allocation_experiments", sa.Integer(), nullable=True),
            sa.Column("allocation_hours", sa.Float(), nullable=True),
            sa.Column("dedicated", sa.Boolean(), nullable=False),
            _ts("embargo_until", nullable=True),
            _ts("created_at"),
            _ts("decided_at", nullable=True),
            sa.Column("decided_by", sa.String(32), nullable=True),
            sa.ForeignKeyConstraint(["pi_id"], ["svc_users.id"]),
            sa.PrimaryKeyConstraint("id"),
        ], [("ix_svc_proposals_coalition", ["coalition"], False)]),
        ("svc_members", [
            sa.Column("proposal_id", sa.String(32), nullable=False),
            sa.Column("user_id", sa.String(32), nullable=False),
            sa.Column("role", sa.String(20), nullable=False),
            _ts("added_at"),
            sa.ForeignKeyConstraint(["proposal_id"], ["svc_proposals.id"]),
            sa.ForeignKeyConstraint(["user_id"], ["svc_users.id"]),
            sa.PrimaryKeyConstraint("proposal_id", "user_id"),
        ], [("ix_svc_members_user_id", ["user_id"], False)]),
        ("svc_audit", [
            sa.Column("id", BigID, autoincrement=True, nullable=False),
            _ts("at"),
            sa.Column("actor_id", sa.String(32), nullable=True),
            sa.Column("actor", sa.String(100), nullable=False),
            sa.Column("action", sa.String(60), nullable=False),
            sa.Column("target_type", sa.String(30), nullable=False),
            sa.Column("target_id", sa.String(64), nullable=False),
            sa.Column("proposal_id", sa.String(32), nullable=True),
            sa.Column("detail", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        ], [("ix_svc_audit_at", ["at"], False),
            ("ix_svc_audit_action", ["action"], False),
            ("ix_svc_audit_target_id", ["target_id"], False),
            ("ix_svc_audit_proposal_id", ["proposal_id"], False)]),
        ("svc_queue", [
            sa.Column("id", sa.String(32), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("instrument", sa.String(60), nullable=False),
            sa.Column("plan", sa.String(60), nullable=False),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("proposal_id", sa.String(32), nullable=False),
            sa.Column("user_id", sa.String(32), nullable=False),
            sa.Column("priority", sa.Integer(), nullable=False),
            sa.Column("note", sa.Text(), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("campaign_id", sa.String(32), nullable=True),
            sa.Column("suggestion_id", sa.String(32), nullable=True),
            sa.Column("run_uid", sa.String(64), nullable=True),
            sa.Column("result", sa.JSON(), nullable=True),
            sa.Column("error", sa.Text(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("worker", sa.String(120), nullable=True),
            _ts("heartbeat_at", nullable=True),
            _ts("created_at"),
            _ts("started_at", nullable=True),
            _ts("finished_at", nullable=True),
            sa.PrimaryKeyConstraint("id"),
        ], [("ix_svc_queue_proposal_id", ["proposal_id"], False),
            ("ix_svc_queue_campaign_id", ["campaign_id"], False),
            ("ix_svc_queue_run_uid", ["run_uid"], False),
            ("ix_svc_queue_dispatch", ["instrument", "status", "proposal_id", "priority", "created_at"], False)]),
        ("svc_campaigns", [
            sa.Column("campaign_id", sa.String(32), nullable=False),
            sa.Column("proposal_id", sa.String(32), nullable=False),
            sa.Column("owner_id", sa.String(32), nullable=False),
            sa.Column("instrument", sa.String(60), nullable=False),
            sa.Column("state", sa.String(20), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            sa.Column("priority", sa.Integer(), nullable=False),
            _ts("created_at"),
            _ts("updated_at"),
            sa.PrimaryKeyConstraint("campaign_id"),
        ], [("ix_svc_campaigns_proposal_id", ["proposal_id"], False)]),
        ("svc_usage", [
            sa.Column("id", BigID, autoincrement=True, nullable=False),
            sa.Column("proposal_id", sa.String(32), nullable=False),
            sa.Column("instrument", sa.String(60), nullable=False),
            sa.Column("item_id", sa.String(32), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("dedicated", sa.Boolean(), nullable=False),
            _ts("started_at"),
            _ts("finished_at"),
            sa.Column("seconds", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        ], [("ix_svc_usage_proposal_id", ["proposal_id"], False)]),
    ]


def upgrade() -> None:
    existing = set() if context.is_offline_mode() else set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns, indexes in _tables():
        if name in existing:  # made by create_all before migrations began: adopt it as it is
            continue
        op.create_table(name, *columns)
        for index, cols, unique in indexes:
            op.create_index(index, name, cols, unique=unique)


def downgrade() -> None:
    for name, _columns, _indexes in reversed(_tables()):
        op.drop_table(name)
