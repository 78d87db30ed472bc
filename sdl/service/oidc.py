"""Sign-in through the institution's identity provider (OpenID Connect).

The provider says who someone is; sdl still says what they may do (role, proposal
membership). An account is linked to the provider's ``(issuer, subject)``: by an admin
(``POST /api/users/{id}/identities``), or on first sign-in when
``oidc_create_accounts`` is set (a ``user`` account, no proposals).

- Web page: ``GET /api/auth/login`` sends the browser to the provider (authorization
  code flow with ``state``, ``nonce`` and a cookie binding the flow to that browser);
  ``GET /api/auth/callback`` checks the state (one use, 10 minutes), exchanges the code
  at the provider's token endpoint, verifies the ID token and answers with a redirect
  to ``/#token=...`` (an sdl token of ``oidc_token_ttl_days``).
- Programs: ``POST /api/auth/token {"id_token": ...}`` exchanges an ID token the
  provider issued to this service's client id (e.g. from a device-code flow) for an
  sdl token. Each ID token is taken once.

An ID token is accepted only when its signature verifies against the provider's
published keys (JWKS; fetched again once for an unknown key), it names the provider as
``iss`` and this service's client id in ``aud`` (and ``azp`` when there are several),
it has not expired (``oidc_clock_leeway_s``), and, in the browser flow, it carries the
flow's nonce. The OAuth 2.0 flow is Authlib's client; the JOSE checks are joserfc
(Authlib's JOSE library).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from joserfc import errors as jose_errors
from joserfc import jwt
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from sdl.models import new_id
from sdl.service.auth import Authenticator
from sdl.service.db import IdentityRow, TokenRow, UserRow, audit, iso
from sdl.service.errors import Conflict, Forbidden, NotFound, ServiceError, Unauthorized
from sdl.store import utcnow

log = logging.getLogger(__name__)

STATE_TTL_S = 600.0
BINDING_COOKIE = "sdl_oidc"
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class ProviderUnavailable(ServiceError):
    """The identity provider could not be reached or answered nonsense (502, not a 500)."""

    status = 502
    code = "identity_provider_unavailable"


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class OIDCSignIn:
    def __init__(self, svc: Any):
        st = svc.settings
        self.svc = svc
        self.issuer = (st.oidc_issuer or "").rstrip("/")
        self.client_id = st.oidc_client_id or ""
        self.client_secret = st.oidc_client_secret.get_secret_value() if st.oidc_client_secret else None
        self.scopes = st.oidc_scopes
        self.leeway = int(st.oidc_clock_leeway_s)
        self._meta: dict | None = None
        self._keys: KeySet | None = None
        self._lock = threading.Lock()
        #: state -> (nonce, hash of the browser binding, redirect_uri, deadline, PKCE verifier); each taken once
        self._pending: dict[str, tuple[str, str, str, float, str]] = {}
        #: hashes of ID tokens already exchanged -> their expiry (a token is taken once)
        self._used: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.issuer and self.client_id)

    def _require(self) -> None:
        if not self.enabled:
            raise NotFound("sign-in through an identity provider is not configured here (oidc_issuer, oidc_client_id)")

    # ------------------------------------------------------------ the provider
    def _fetch(self, url: str) -> dict:
        try:
            r = httpx.get(url, timeout=10)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailable(f"the identity provider did not answer ({url}): {exc}") from None

    def metadata(self) -> dict:
        if self._meta is None:
            meta = self._fetch(f"{self.issuer}/.well-known/openid-configuration")
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise ProviderUnavailable(f"the provider at {self.issuer} calls itself {meta.get('issuer')!r}")
            self._meta = meta
        return self._meta

    def keys(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            try:
                self._keys = KeySet.import_key_set(self._fetch(self.metadata()["jwks_uri"]))
            except (KeyError, ValueError, jose_errors.JoseError) as exc:
                raise ProviderUnavailable(f"the identity provider's keys are unreadable: {exc}") from None
        return self._keys

    def _session(self, redirect_uri: str, state: str | None = None):
        from authlib.integrations.requests_client import OAuth2Session

        return OAuth2Session(self.client_id, self.client_secret, scope=self.scopes, redirect_uri=redirect_uri,
                             state=state, code_challenge_method="S256",  # PKCE as well (RFC 7636)
                             token_endpoint_auth_method="client_secret_basic" if self.client_secret else "none")

    # --------------------------------------------------------- the browser flow
    def begin(self, redirect_uri: str) -> tuple[str, str]:
        """(the provider's authorization URL, the browser binding to set as a cookie)."""
        self._require()
        state, nonce, binding, verifier = (secrets.token_urlsafe(32) for _ in range(4))
        url, _ = self._session(redirect_uri).create_authorization_url(
            self.metadata()["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier)
        now = time.monotonic()
        with self._lock:
            for k in [k for k, v in self._pending.items() if v[3] < now]:
                del self._pending[k]
            if len(self._pending) > 10_000:
                raise Conflict("too many sign-ins in progress; try again in a few minutes")
            self._pending[state] = (nonce, _h(binding), redirect_uri, now + STATE_TTL_S, verifier)
        return url, binding

    def finish(self, code: str, state: str, binding: str | None) -> dict:
        """The provider sent the browser back: check the state, redeem the code, sign in."""
        self._require()
        with self._lock:
            entry = self._pending.pop(state, None)  # taken once: a replayed state finds nothing
        if entry is None or entry[3] < time.monotonic():
            raise Unauthorized("unknown, already used or expired sign-in state: start again at /api/auth/login")
        nonce, binding_hash, redirect_uri, _, verifier = entry
        if not binding or not secrets.compare_digest(_h(binding), binding_hash):
            raise Unauthorized("this sign-in was started in another browser: start again at /api/auth/login")
        try:
            token = self._session(redirect_uri, state).fetch_token(
                self.metadata()["token_endpoint"], code=code, grant_type="authorization_code",
                code_verifier=verifier)
        except Exception as exc:  # noqa: BLE001 - the provider refused the code
            raise Unauthorized(f"the identity provider did not accept the sign-in: {exc}") from None
        if "id_token" not in token:
            raise Unauthorized("the identity provider sent no ID token (is 'openid' among oidc_scopes?)")
        return self.sign_in(self.verify(token["id_token"], nonce=nonce), via="browser")

    # ----------------------------------------------------------- ID tokens
    def verify(self, id_token: str, nonce: str | None = None) -> dict:
        """The ID token's claims, or 401 saying what is wrong with it."""
        self._require()
        try:
            try:
                tok = jwt.decode(id_token, self.keys(), algorithms=ALGORITHMS)
            except (jose_errors.BadSignatureError, ValueError, jose_errors.InvalidKeyIdError):
                tok = jwt.decode(id_token, self.keys(refresh=True), algorithms=ALGORITHMS)  # keys rotated?
        except jose_errors.BadSignatureError:
            raise Unauthorized("ID token: the signature does not verify with the provider's keys") from None
        except (jose_errors.JoseError, ValueError) as exc:
            raise Unauthorized(f"ID token: not a valid signed token ({exc})") from None
        claims = tok.claims
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway, iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id}, sub={"essential": True},
            exp={"essential": True}, iat={"essential": True})
        try:
            registry.validate(claims)
        except jose_errors.ExpiredTokenError:
            raise Unauthorized("ID token: expired") from None
        except jose_errors.InvalidClaimError as exc:
            raise Unauthorized(f"ID token: wrong {exc.claim} (audience must be this service's client id "
                               f"{self.client_id!r}, issuer {self.issuer!r})") from None
        except jose_errors.JoseError as exc:
            raise Unauthorized(f"ID token: {exc}") from None
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise Unauthorized("ID token: several audiences and azp is not this service")
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise Unauthorized("ID token: the nonce is not this sign-in's")
        return claims

    def exchange(self, id_token: str) -> dict:
        """``POST /api/auth/token``: an ID token for this service -> an sdl token (each ID token once)."""
        claims = self.verify(id_token)
        h, now = _h(id_token), time.time()
        with self._lock:
            for k in [k for k, exp in self._used.items() if exp < now - self.leeway]:
                del self._used[k]
            if h in self._used:
                raise Unauthorized("ID token: already exchanged (each ID token is taken once)")
            self._used[h] = float(claims["exp"])
        return self.sign_in(claims, via="id_token")

    # ------------------------------------------------------------ accounts
    def sign_in(self, claims: dict, via: str) -> dict:
        from sdl.service.service import SYSTEM

        st = self.svc.settings
        sub = str(claims["sub"])
        with self.svc.db.session() as s:
            ident = s.get(IdentityRow, (self.issuer, sub))
            if ident is None:
                if not st.oidc_create_accounts:
                    raise Forbidden(f"no sdl account is linked to {sub!r} at {self.issuer}: ask an admin to link "
                                    "one (POST /api/users/{id}/identities)")
                user = UserRow(id=new_id(), name=self._new_name(s, claims), role="user",
                               email=str(claims.get("email") or "")[:200])
                s.add(user)
                s.flush()
                ident = IdentityRow(issuer=self.issuer, subject=sub, user_id=user.id,
                                    email=str(claims.get("email") or "")[:200])
                s.add(ident)
                audit(s, SYSTEM, "user.create", "user", user.id, name=user.name, role="user", issuer=self.issuer,
                      subject=sub)
            user = s.get(UserRow, ident.user_id)
            if user is None or not user.active:
                raise Forbidden("the linked sdl account is deactivated")
            ident.last_login_at = utcnow()
            self._make_room(s, user.id, st.max_tokens_per_account)
            tok, token = Authenticator.issue(s, user.id, f"sign-in ({via})", st.oidc_token_ttl_days)
            audit(s, SimpleNamespace(user_id=user.id, name=user.name), "auth.sign_in", "token", tok.id,
                  issuer=self.issuer, subject=sub, user_id=user.id,
                  expires_at=iso(tok.expires_at))
            out = {"token": token, "token_id": tok.id, "expires_at": iso(tok.expires_at),
                   "user": {"id": user.id, "name": user.name, "role": user.role}}
        return out

    @staticmethod
    def _make_room(s, user_id: str, cap: int) -> None:
        """Keep the account under its cap of live tokens: the oldest sign-in tokens are revoked
        (signing in again replaces them); named tokens are never touched."""
        live = list(s.scalars(select(TokenRow).where(
            TokenRow.user_id == user_id, TokenRow.revoked_at.is_(None),
            TokenRow.expires_at.is_(None) | (TokenRow.expires_at > utcnow())).order_by(TokenRow.created_at)))
        excess = len(live) - cap + 1
        for t in [t for t in live if t.name.startswith("sign-in (")][:max(0, excess)]:
            t.revoked_at = utcnow()
            excess -= 1
        if excess > 0:
            raise Conflict(f"the account has {len(live)} live tokens, the most it may have ({cap}); "
                           "revoke one first (DELETE /api/tokens/ID)")

    @staticmethod
    def _new_name(s, claims: dict) -> str:
        base = str(claims.get("preferred_username") or str(claims.get("email") or "").split("@")[0]
                   or f"user-{str(claims['sub'])[:8]}")
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", base)[:60] or "user"
        name, n = base, 1
        while s.scalar(select(UserRow).where(UserRow.name == name)) is not None:
            n += 1
            name = f"{base}-{n}"
        return name

    def link(self, actor: Any, user_key: str, subject: str, issuer: str | None = None) -> dict:
        """``POST /api/users/{id}/identities`` (admin): this account is ``subject`` at the provider."""
        issuer = (issuer or self.issuer).rstrip("/")
        if not issuer:
            raise NotFound("no identity provider is configured here (oidc_issuer); name the issuer")
        with self.svc.db.session() as s:
            user = s.get(UserRow, user_key) or s.scalar(select(UserRow).where(UserRow.name == user_key))
            if user is None:
                raise NotFound(f"user {user_key!r} not found")
            ident = s.get(IdentityRow, (issuer, subject))
            if ident is not None and ident.user_id != user.id:
                raise Conflict(f"{subject!r} at {issuer} is already linked to another account")
            if ident is None:
                s.add(IdentityRow(issuer=issuer, subject=subject, user_id=user.id))
            audit(s, actor, "user.link_identity", "user", user.id, issuer=issuer, subject=subject)
        return {"user_id": user.id, "issuer": issuer, "subject": subject}


# ------------------------------------------------------------------ HTTP
class IdTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_token: str = Field(min_length=10, max_length=20_000, description="an ID token the provider issued to this "
                                                                       "service's client id")


class IdentityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(min_length=1, max_length=255, description="the provider's `sub` for this person")
    issuer: str | None = Field(None, max_length=300, description="default: this service's oidc_issuer")


def router(svc: Any, principal: Any) -> APIRouter:
    """``/api/auth/*`` and the admin's account linking; ``principal`` is the API's dependency."""
    from sdl.service.authz import require

    oidc = OIDCSignIn(svc)
    svc.oidc = oidc
    api = APIRouter(prefix="/api", tags=["sign-in"])

    @api.get("/auth/login", response_class=RedirectResponse, status_code=302,
             responses={302: {"description": "to the identity provider"}})
    def login(request: Request) -> RedirectResponse:
        redirect_uri = svc.settings.oidc_redirect_url or str(request.url_for("oidc_callback"))
        url, binding = oidc.begin(redirect_uri)
        r = RedirectResponse(url, status_code=302)
        r.set_cookie(BINDING_COOKIE, binding, max_age=int(STATE_TTL_S), httponly=True, samesite="lax",
                     secure=request.url.scheme == "https", path="/api/auth")
        return r

    @api.get("/auth/callback", name="oidc_callback", response_class=RedirectResponse, status_code=302,
             responses={302: {"description": "to the web page, with the new token in the fragment"}})
    def callback(request: Request, code: str = Query(max_length=4096), state: str = Query(max_length=200)
                 ) -> RedirectResponse:
        out = oidc.finish(code, state, request.cookies.get(BINDING_COOKIE))
        r = RedirectResponse(f"/#token={out['token']}", status_code=302)
        r.delete_cookie(BINDING_COOKIE, path="/api/auth")
        return r

    @api.post("/auth/token", status_code=201)
    def exchange(body: IdTokenIn) -> dict:
        return oidc.exchange(body.id_token)

    @api.post("/users/{user_id}/identities", status_code=201, tags=["accounts"])
    def link(user_id: str, body: IdentityIn, p: Any = Depends(principal)) -> dict:
        require(p, "accounts.manage", "only admins link accounts to identities")
        return oidc.link(p, user_id, body.subject, body.issuer)

    return api
