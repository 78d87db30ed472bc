"""Accounts and bearer tokens: a random token is shown once; only its sha256 is stored.

A token is valid while its user is active, it is not revoked and not expired. Lookups
are cached for a moment (revocation and role changes clear the cache at once).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from sdl.models import new_id
from sdl.service.db import ServiceDB, TokenRow, UserRow, as_utc
from sdl.service.lookup_cache import LookupCache
from sdl.store import utcnow

TOKEN_PREFIX = "sdl_"
_CACHE_S = 2.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user behind a valid token."""

    user_id: str
    name: str
    role: str
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_staff(self) -> bool:
        """Facility staff: admins and beamline scientists."""
        return self.role in ("admin", "scientist")


def _unexpired(principal: Principal | None, expires: dt.datetime | None) -> Principal | None:
    if principal is None or (expires is not None and expires <= utcnow()):
        return None
    return principal


class Authenticator:
    def __init__(self, db: ServiceDB):
        self.db = db
        self._cache: LookupCache[tuple[Principal | None, dt.datetime | None]] = LookupCache(_CACHE_S)
        #: called after every change of tokens or accounts (open live streams re-check at once)
        self.listeners = self._cache.listeners

    def invalidate(self) -> None:
        self._cache.invalidate()

    def cached(self, token: str) -> Principal | None:
        """The principal if a fresh cache entry says the token is valid; None means "look it up"."""
        found, hit = self._cache.fresh(hash_token(token)) if token else (False, None)
        return _unexpired(*hit) if found else None

    def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        h = hash_token(token)
        return _unexpired(*self._cache.get(h, lambda: self._lookup(h)))

    def _lookup(self, h: str) -> tuple[Principal | None, dt.datetime | None]:
        with self.db.read() as s:
            row = s.execute(
                select(TokenRow, UserRow).join(UserRow, UserRow.id == TokenRow.user_id).where(TokenRow.token_hash == h)
            ).first()
            if row is None:
                return None, None
            tok, user = row
            if tok.revoked_at is not None or not user.active:
                return None, None
            return Principal(user.id, user.name, user.role, tok.id), as_utc(tok.expires_at)

    @staticmethod
    def issue(s, user_id: str, name: str, ttl_days: float | None, token: str | None = None) -> tuple[TokenRow, str]:
        """Add a token row for ``user_id`` in session ``s``; returns the row and the plain token."""
        token = token or new_token()
        row = TokenRow(
            id=new_id(), user_id=user_id, name=name, token_hash=hash_token(token), prefix=token[:10],
            expires_at=None if ttl_days is None else utcnow() + dt.timedelta(days=ttl_days),
        )
        s.add(row)
        return row, token


class RateLimiter:
    """A token bucket per key (an account, a token, a client address)."""

    def __init__(self, per_minute: float, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.max_keys = 100_000

    def allow(self, key: str) -> tuple[bool, float]:
        """(allowed, seconds to wait before the next request would be allowed)."""
        now = time.monotonic()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) > self.max_keys:
                    # forget the buckets with the most left (refilled ones lose nothing); keep those
                    # closest to their limit, so flooding with new keys frees no one
                    level = {k: min(self.burst, t + (now - at) * self.rate) for k, (t, at) in self._buckets.items()}
                    for k in sorted(level, key=level.__getitem__, reverse=True)[:len(level) - self.max_keys // 2]:
                        del self._buckets[k]
                b = self._buckets[key] = [self.burst, now]
            tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
            if tokens >= 1.0:
                b[0] = tokens - 1.0
                return True, 0.0
            b[0] = tokens
            return False, (1.0 - tokens) / self.rate


def _ensure_user(s, name: str, role: str) -> UserRow:
    user = s.scalar(select(UserRow).where(UserRow.name == name))
    if user is None:
        user = UserRow(id=new_id(), name=name, role=role)
        s.add(user)
        s.flush()
    return user
