"""How many workflow tasks count against each proposal's experiment allocation.

Its own module so that the service's scheduler (:func:`sdl.service.scheduler.usage`)
can count workflow tasks without importing the workflow queue, which builds on the
scheduler (:mod:`sdl.workflows.fairqueue`).
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from sdl.workflows.tables import TaskRow

#: task states that count against an experiment allocation whatever the attempts
PENDING = ("waiting", "ready", "running")


def counted_tasks(s: Session, proposal_ids: list[str]) -> dict[str, int]:
    """Workflow tasks that count against each proposal's experiment allocation: those still
    to run (waiting, ready, running) and those that ran (at least one attempt)."""
    if not proposal_ids:
        return {}
    return dict(s.execute(
        select(TaskRow.proposal_id, func.count()).where(
            TaskRow.proposal_id.in_(proposal_ids), TaskRow.instrument != "",
            or_(TaskRow.status.in_(PENDING), TaskRow.attempts > 0))
        .group_by(TaskRow.proposal_id)).all())
