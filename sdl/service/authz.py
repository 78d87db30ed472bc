"""The authorisation decision: what each role may do, in one table.

Data visibility is never a matter of role: whether a caller may read a proposal's data
is decided by :func:`sdl.service.access.proposal_readable` from the current
memberships and approvals only (staff included). What a role adds is *capabilities*:
operating the facility (instruments, the queue, accounts, approvals), each listed
here once, with what it shows. ``docs/http-api.md`` carries the same table (a test
compares them); every check in the service goes through :func:`can` /
:func:`require`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sdl.service.errors import Forbidden

ROLES = ("user", "scientist", "admin")


class Capability(NamedTuple):
    roles: tuple[str, ...]
    what: str


STAFF = ("scientist", "admin")
ADMIN = ("admin",)

#: capability -> the roles that have it, and what it allows (never a proprietary proposal's data)
CAPABILITIES: dict[str, Capability] = {
    "accounts.list": Capability(STAFF, "list accounts: id, name, role, active (no e-mail)"),
    "accounts.email": Capability(ADMIN, "see accounts' e-mail addresses"),
    "accounts.manage": Capability(ADMIN, "create accounts, change roles, deactivate"),
    "tokens.others": Capability(ADMIN, "issue, list and revoke other accounts' tokens"),
    "proposals.all": Capability(ADMIN, "see every proposal's metadata (title, kind, members, allocation, usage)"),
    "proposals.decide": Capability(ADMIN, "approve, reject, close proposals"),
    "proposals.members": Capability(ADMIN, "change any proposal's members"),
    "audit.all": Capability(ADMIN, "read the whole audit log (details of unreadable proposals redacted)"),
    "instruments.control": Capability(STAFF, "pause, resume, abort instruments"),
    "instruments.share": Capability(ADMIN, "set an instrument's dedicated fraction"),
    "instruments.current": Capability(STAFF, "see which proposal an instrument is running now"),
    "queue.proposals": Capability(STAFF, "see the proposal id of every queued item (never its parameters)"),
    "experiments.stop": Capability(STAFF, "cancel or abort any experiment (answer redacted)"),
    "campaigns.halt": Capability(STAFF, "pause or stop any campaign (answer redacted; never start or resume)"),
    "usage.all": Capability(STAFF, "metering of every proposal; dedicated vs shared time"),
}


def can(p: Any, capability: str) -> bool:
    """Whether principal ``p`` (anything with a ``role``) has ``capability``."""
    cap = CAPABILITIES[capability]  # KeyError: a typo in the service, not a user's input
    return getattr(p, "role", None) in cap.roles


def require(p: Any, capability: str, message: str | None = None) -> None:
    """403 unless ``p`` has ``capability``."""
    if not can(p, capability):
        raise Forbidden(message or f"your role ({getattr(p, 'role', None)}) may not do this: {capability}")


def markdown_table() -> str:
    """The capability table as it stands in docs/http-api.md."""
    lines = ["| capability | user | scientist | admin | what |", "| --- | --- | --- | --- | --- |"]
    for name, cap in CAPABILITIES.items():
        marks = " | ".join("yes" if r in cap.roles else "-" for r in ROLES)
        lines.append(f"| `{name}` | {marks} | {cap.what} |")
    return "\n".join(lines)


#: audit detail keys shown to someone who may not read the proposal's data (the rest is redacted)
AUDIT_PUBLIC_KEYS = frozenset({
    "from", "comment", "allocation", "dedicated", "embargo_until", "role", "name", "user_id", "members", "kind",
    "instruments", "instrument", "plan", "priority", "title", "immediate", "item_id", "dedicated_fraction",
    "expires_at", "active", "bootstrap", "subject", "issuer",
})


def redact_audit_detail(detail: dict | None) -> dict:
    """An audit row's details without anything that could carry a proposal's data."""
    detail = detail or {}
    out = {k: v for k, v in detail.items() if k in AUDIT_PUBLIC_KEYS}
    if len(out) != len(detail):
        out["redacted"] = sorted(k for k in detail if k not in AUDIT_PUBLIC_KEYS)
    return out
