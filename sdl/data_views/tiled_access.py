"""sdl's accounts and read rules inside a Tiled server.

- :class:`SdlTokenAuthenticator` (a Tiled *internal* authenticator): log in to Tiled
  with your sdl user name and an sdl API token as the password. The feed logs in as
  a separate account whose secret only the sdl process and the Tiled server know.
- :class:`SdlAccessPolicy` (a Tiled access policy): every node the feed writes carries
  the proposal id as its access tag; a user sees a node when sdl's own rule
  (:meth:`sdl.service.access.AccessView.readable_ids`: members; open proposals after
  the embargo; coalitions) lets them read that proposal. Decided on every request from
  sdl's database, so membership changes and embargo ends apply at once. Tiled admins
  (the feed) read and write everything; nobody else writes.
- :func:`login`: a ``tiled.client`` node logged in with a user name and password.

Both classes run inside the Tiled server process and open sdl's database by URL.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from typing import Any, Optional

from tiled.access_control.protocols import AccessPolicy
from tiled.access_control.scopes import ALL_SCOPES
from tiled.queries import AccessBlobFilter
from tiled.server.protocols import InternalAuthenticator, UserSessionState

PROVIDER = "sdl"
READ_SCOPES = {"read:metadata", "read:data"}
#: the tag of runs whose proposal is unknown: readable by Tiled admins only
NO_PROPOSAL = "sdl:no-proposal"


class _SdlDB:
    """The sdl database, opened once per server process, for both classes."""

    _lock = threading.Lock()
    _open: dict[str, Any] = {}

    @classmethod
    def get(cls, store_url: str) -> Any:
        with cls._lock:
            if store_url not in cls._open:
                from sdl.service.access import MembershipCache
                from sdl.service.auth import Authenticator
                from sdl.service.db import ServiceDB

                db = ServiceDB(store_url)
                cls._open[store_url] = (db, Authenticator(db), MembershipCache(db))
            return cls._open[store_url]


class SdlTokenAuthenticator(InternalAuthenticator):
    """User name + sdl API token; or the feed's account + its secret."""

    def __init__(self, store_url: str, feed_user: str = "sdl-feed", feed_secret: str = "",
                 confirmation_message: str = "Logged in to Tiled as {id}."):
        self.store_url = store_url
        self.feed_user = feed_user
        self.feed_secret = feed_secret
        self.confirmation_message = confirmation_message

    async def authenticate(self, username: str, password: str) -> Optional[UserSessionState]:
        if self.feed_secret and username == self.feed_user:
            ok = secrets.compare_digest(password.encode(), self.feed_secret.encode())
            return UserSessionState(username, {}) if ok else None
        _, auth, _ = _SdlDB.get(self.store_url)
        p = await asyncio.to_thread(auth.authenticate, password)
        if p is None or p.name != username:
            return None
        return UserSessionState(username, {"sdl_user_id": p.user_id})


class _Who:
    """The minimal principal :class:`AccessView` needs."""

    def __init__(self, user_id: str, name: str):
        self.user_id, self.name = user_id, name


class SdlAccessPolicy(AccessPolicy):
    """Tiled nodes tagged with proposal ids, read by whoever sdl lets read the proposal."""

    def __init__(self, store_url: str, provider: str = PROVIDER, ttl_s: float = 2.0):
        self.store_url = store_url
        self.provider = provider
        self.ttl_s = ttl_s
        self._ids: dict[str, tuple[float, str | None]] = {}
        self._cache: dict[str, tuple[float, set[str]]] = {}

    # ---------------------------------------------------------------- who
    @staticmethod
    def _is_admin(authn_scopes: Any) -> bool:
        return "admin:apikeys" in (authn_scopes or ())

    def _name(self, principal: Any) -> str | None:
        if principal is None:
            return None
        for identity in principal.identities:
            if identity.provider == self.provider:
                return identity.id
        return None

    def _user_id(self, name: str) -> str | None:
        hit = self._ids.get(name)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        from sqlalchemy import select

        from sdl.service.db import UserRow

        db, _, _ = _SdlDB.get(self.store_url)
        with db.read() as s:
            row = s.scalar(select(UserRow).where(UserRow.name == name))
        uid = row.id if row is not None and row.active else None
        self._ids[name] = (time.monotonic(), uid)
        return uid

    def _readable(self, principal: Any) -> set[str]:
        """The proposals whose data this Tiled principal may read, by sdl's rule (kept ``ttl_s``)."""
        from sdl.service.access import AccessView

        name = self._name(principal)
        hit = self._cache.get(name) if name else None
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        uid = None if name is None else self._user_id(name)
        if uid is None:
            return set()
        db, _, members = _SdlDB.get(self.store_url)
        readable = AccessView(db, _Who(uid, name), members).readable_ids()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[name] = (time.monotonic(), readable)
        return readable

    # ------------------------------------------------------------ protocol
    async def init_node(self, principal: Any, authn_access_tags: Any, authn_scopes: Any,
                        access_blob: Any = None) -> tuple[bool, Any]:
        if not self._is_admin(authn_scopes):
            raise ValueError("only the sdl feed writes to this Tiled server")
        tags = list((access_blob or {}).get("tags") or [NO_PROPOSAL])
        return (access_blob != {"tags": tags}), {"tags": tags}

    async def allowed_scopes(self, node: Any, principal: Any, authn_access_tags: Any,
                             authn_scopes: Any) -> set[str]:
        if self._is_admin(authn_scopes):
            return set(ALL_SCOPES)
        blob = getattr(node, "access_blob", None) or {}
        tags = blob.get("tags")
        if not tags:  # the root and other untagged containers: browse, never write
            return set(READ_SCOPES) if self._name(principal) is not None else set()
        readable = await asyncio.to_thread(self._readable, principal)
        return set(READ_SCOPES) if readable.intersection(tags) else set()

    async def filters(self, node: Any, principal: Any, authn_access_tags: Any, authn_scopes: Any,
                      scopes: Any) -> list:
        if self._is_admin(authn_scopes):
            return []
        readable = await asyncio.to_thread(self._readable, principal)
        return [AccessBlobFilter(None, sorted(readable))]


def login(uri: str, username: str, password: str, provider: str = PROVIDER, **kwargs: Any) -> Any:
    """A ``tiled.client`` root node, logged in through the sdl provider (no prompt)."""
    from tiled.client import from_context
    from tiled.client.context import Context, password_grant

    context = Context.from_any_uri(uri, **kwargs)[0]
    spec = next((p for p in context.server_info.authentication.providers if p.provider == provider), None)
    if spec is None:
        raise ValueError(f"the Tiled server at {uri} has no {provider!r} login")
    tokens = password_grant(context.http_client, spec.links["auth_endpoint"], provider, username, password)
    context.configure_auth(tokens, remember_me=False)
    return from_context(context)
