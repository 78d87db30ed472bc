"""Accounts: who am I, users and API tokens (router: :mod:`sdl.service.routers.accounts`).

A part of :class:`sdl.service.service.LabService` (a mixin): its methods use the
service's state (``db``, ``store``, ``workers``, ``scheduler``...) set up there."""

from __future__ import annotations

from sqlalchemy import func, select

from sdl.models import new_id
from sdl.service.access import AccessView
from sdl.service.auth import Authenticator, Principal
from sdl.service.authz import can, require
from sdl.service.db import TokenRow, UserRow, audit, iso
from sdl.service.errors import Conflict, NotFound
from sdl.store import utcnow


class AccountsMixin:
    def view(self, p: Principal) -> AccessView:
        return AccessView(self.db, p, self.members)

    def _user_by(self, s, key: str) -> UserRow | None:
        return s.get(UserRow, key) or s.scalar(select(UserRow).where(UserRow.name == key))

    @staticmethod
    def user_json(u: UserRow) -> dict:
        return {"id": u.id, "name": u.name, "role": u.role, "email": u.email, "active": u.active,
                "created_at": iso(u.created_at)}

    @staticmethod
    def token_json(t: TokenRow) -> dict:
        return {"id": t.id, "user_id": t.user_id, "name": t.name, "prefix": t.prefix,
                "created_at": iso(t.created_at), "expires_at": iso(t.expires_at), "revoked_at": iso(t.revoked_at)}

    def me(self, p: Principal) -> dict:
        with self.db.read() as s:
            u = s.get(UserRow, p.user_id)
        out = self.user_json(u)
        out["proposals"] = self.view(p).member_of
        return out

    def create_user(self, p: Principal, name: str, role: str, email: str = "", ttl_days: float | None = None) -> dict:
        require(p, "accounts.manage", "only admins create accounts")
        with self.db.session() as s:
            if s.scalar(select(UserRow).where(UserRow.name == name)) is not None:
                raise Conflict(f"user {name!r} exists")
            u = UserRow(id=new_id(), name=name, role=role, email=email)
            s.add(u)
            s.flush()
            tok, token = Authenticator.issue(s, u.id, "initial", ttl_days or self.settings.token_ttl_days)
            audit(s, p, "user.create", "user", u.id, name=name, role=role)
        return {"user": self.user_json(u), "token": token, "token_id": tok.id, "expires_at": iso(tok.expires_at)}

    def list_users(self, p: Principal) -> list[dict]:
        require(p, "accounts.list", "only staff list accounts")
        email = can(p, "accounts.email")
        with self.db.read() as s:
            rows = [self.user_json(u) for u in s.scalars(select(UserRow).order_by(UserRow.created_at))]
        for r in rows:
            if not email:
                r.pop("email", None)
        return rows

    def update_user(self, p: Principal, user_id: str, role: str | None, active: bool | None) -> dict:
        require(p, "accounts.manage", "only admins change accounts")
        with self.db.session() as s:
            u = self._user_by(s, user_id)
            if u is None:
                raise NotFound(f"user {user_id!r} not found")
            if u.id == p.user_id and (active is False or (role is not None and role != "admin")):
                raise Conflict("admins cannot demote or deactivate themselves")
            changes = {}
            if role is not None and role != u.role:
                changes["role"] = [u.role, role]
                u.role = role
            if active is not None and active != u.active:
                changes["active"] = [u.active, active]
                u.active = active
            audit(s, p, "user.update", "user", u.id, **changes)
        self.auth.invalidate()
        return self.user_json(u)

    def create_token(self, p: Principal, name: str, ttl_days: float | None, user_id: str | None) -> dict:
        target = p.user_id
        if user_id is not None and user_id != p.user_id:
            require(p, "tokens.others", "only admins issue tokens for other users")
            target = user_id
        with self.db.session() as s:
            u = self._user_by(s, target)
            if u is None:
                raise NotFound(f"user {target!r} not found")
            live = s.scalar(select(func.count()).select_from(TokenRow).where(
                TokenRow.user_id == u.id, TokenRow.revoked_at.is_(None),
                (TokenRow.expires_at.is_(None)) | (TokenRow.expires_at > utcnow())))
            if live >= self.settings.max_tokens_per_account:
                raise Conflict(f"{u.name} has {live} live tokens, the most an account may have "
                               f"({self.settings.max_tokens_per_account}); revoke one first (DELETE /api/tokens/ID)")
            tok, token = Authenticator.issue(s, u.id, name, ttl_days or self.settings.token_ttl_days)
            audit(s, p, "token.create", "token", tok.id, user_id=u.id, name=name, expires_at=iso(tok.expires_at))
        return {**self.token_json(tok), "token": token}

    def list_tokens(self, p: Principal, all_users: bool = False) -> list[dict]:
        with self.db.read() as s:
            q = select(TokenRow).order_by(TokenRow.created_at)
            if not (all_users and can(p, "tokens.others")):
                q = q.where(TokenRow.user_id == p.user_id)
            return [self.token_json(t) for t in s.scalars(q)]

    def revoke_token(self, p: Principal, token_id: str) -> dict:
        with self.db.session() as s:
            t = s.get(TokenRow, token_id)
            if t is None or (t.user_id != p.user_id and not can(p, "tokens.others")):
                raise NotFound(f"token {token_id!r} not found")
            if t.revoked_at is None:
                t.revoked_at = utcnow()
                audit(s, p, "token.revoke", "token", t.id, user_id=t.user_id)
        self.auth.invalidate()
        return self.token_json(t)
