"""Who may see what.

- A proposal's data (parameters, results, run documents, campaign suggestions and
  observations, exports, live documents) is visible to its members.
- *open* proposals: to every signed-in user once the embargo date has passed.
- *coalition* proposals: to the members of every *approved* proposal of the same
  coalition. A pending, rejected or closed proposal grants nothing beyond itself:
  naming a coalition is a request to join it, and the admin's approval is the answer.
- *proprietary* proposals: to nobody else, facility staff included. Staff see that
  an item exists, where it is in the queue and its state (to run the instrument),
  never its parameters or data.

Anything a caller may not read answers 404, as if it did not exist.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select

from sdl.service.db import MemberRow, ProposalRow, as_utc
from sdl.service.lookup_cache import LookupCache
from sdl.store import utcnow


def proposal_readable(prop: ProposalRow, member_of: dict[str, str], coalitions: set[str]) -> bool:
    if prop.id in member_of:
        return True
    if prop.kind == "open" and prop.status in ("approved", "closed"):
        emb = as_utc(prop.embargo_until)
        return emb is not None and emb <= utcnow()
    if (prop.kind == "coalition" and prop.status in ("approved", "closed") and prop.coalition
            and prop.coalition in coalitions):
        return True
    return False


class MembershipCache:
    """Proposals each user belongs to, cached for a moment; cleared on every membership change."""

    def __init__(self, db: Any, ttl: float = 2.0):
        self.db = db
        self._cache: LookupCache[tuple[dict[str, str], set[str]]] = LookupCache(ttl)
        #: called after every change (open live streams re-check themselves at once)
        self.listeners = self._cache.listeners

    def invalidate(self) -> None:
        self._cache.invalidate()

    def get(self, user_id: str) -> tuple[dict[str, str], set[str]]:
        member, coalitions = self._cache.get(user_id, lambda: self._lookup(user_id))
        return dict(member), set(coalitions)

    def _lookup(self, user_id: str) -> tuple[dict[str, str], set[str]]:
        with self.db.read() as s:
            rows = s.execute(
                select(MemberRow.proposal_id, MemberRow.role, ProposalRow.coalition, ProposalRow.kind,
                       ProposalRow.status)
                .join(ProposalRow, ProposalRow.id == MemberRow.proposal_id)
                .where(MemberRow.user_id == user_id)
            ).all()
        member = {pid: role for pid, role, _, _, _ in rows}
        # only an approved proposal makes its members part of its coalition
        coalitions = {c for _, _, c, kind, status in rows if kind == "coalition" and c and status == "approved"}
        return member, coalitions


class AccessView:
    """One caller's view, computed from the database once (per request or per stream)."""

    def __init__(self, db: Any, principal: Any, members: MembershipCache | None = None):
        self.db = db
        self.principal = principal
        self.members = members or MembershipCache(db, ttl=0.0)
        self._member: dict[str, str] | None = None
        self._coalitions: set[str] | None = None
        self._readable: dict[str, bool] = {}

    def _load(self) -> None:
        self._member, self._coalitions = self.members.get(self.principal.user_id)

    @property
    def member_of(self) -> dict[str, str]:
        if self._member is None:
            self._load()
        return self._member  # type: ignore[return-value]

    @property
    def coalitions(self) -> set[str]:
        if self._coalitions is None:
            self._load()
        return self._coalitions  # type: ignore[return-value]

    def is_member(self, proposal_id: str) -> bool:
        return proposal_id in self.member_of

    def is_pi(self, proposal_id: str) -> bool:
        return self.member_of.get(proposal_id) == "pi"

    def can_read_row(self, prop: ProposalRow) -> bool:
        ok = proposal_readable(prop, self.member_of, self.coalitions)
        self._readable[prop.id] = ok
        return ok

    def can_read(self, proposal_id: str | None) -> bool:
        if proposal_id is None:
            return False
        if proposal_id in self._readable:
            return self._readable[proposal_id]
        if proposal_id in self.member_of:
            self._readable[proposal_id] = True
            return True
        with self.db.read() as s:
            prop = s.get(ProposalRow, proposal_id)
        return False if prop is None else self.can_read_row(prop)

    def readable_ids(self) -> set[str]:
        """Every proposal whose data this caller may read."""
        with self.db.read() as s:
            props = list(s.scalars(select(ProposalRow)))
        return {p.id for p in props if self.can_read_row(p)}


class StreamAccess:
    """An :class:`AccessView` that refreshes itself (membership may change during a stream)."""

    def __init__(self, db: Any, principal: Any, ttl: float = 5.0, members: MembershipCache | None = None):
        self.db = db
        self.principal = principal
        self.ttl = ttl
        self.members = members
        self._view = AccessView(db, principal, members)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def refresh(self, principal: Any | None = None) -> None:
        """Forget the view now (a token, account or membership changed)."""
        with self._lock:
            if principal is not None:
                self.principal = principal
            self._view = AccessView(self.db, self.principal, self.members)
            self._at = time.monotonic()

    def can_read(self, proposal_id: str | None) -> bool:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._view = AccessView(self.db, self.principal, self.members)
                self._at = time.monotonic()
            view = self._view
        return view.can_read(proposal_id)
