"""What every request passes before the API sees it (one ASGI middleware).

- Security headers on every HTTP response (CSP, X-Frame-Options, nosniff, Referrer-Policy).
- Rate limits: per client address (always), per address for requests with a wrong token
  (guessing), and per account and per token for signed-in callers: minting more tokens
  or using many addresses does not raise anyone's rate.
- The caller is authenticated once here; the API's dependency reuses that answer, so a
  request is judged on one reading of tokens and accounts.
- The body is read and counted before the app sees it, whatever ``Content-Length`` and
  ``Transfer-Encoding`` claim: more than ``max_body_bytes`` is 413.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sdl.service.auth import Principal

#: the API and JSON answers: nothing may be loaded, framed or sniffed
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
#: the scope key under which the middleware leaves (token, principal or None)
SCOPE_KEY = "sdl.auth"


def bearer(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def nul_field(body: bytes) -> str | None:
    """The dotted path of the first text in a JSON body that holds a NUL character (PostgreSQL
    refuses it in text and JSON columns: refused here with the field named, not a 500 later),
    "body" for a key holding one; None when there is none or the body is not JSON (the app's
    own validation answers that)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None

    def walk(value: Any, path: list[str]) -> str | None:
        if isinstance(value, str):
            return ".".join(path) or "body" if "\x00" in value else None
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return ".".join(path) or "body"
            found = walk(item, [*path, str(key)])
            if found is not None:
                return found
        return None

    return walk(data, [])


class GuardMiddleware:
    def __init__(self, app: Any, svc: Any):
        self.app = app
        self.svc = svc
        self.max_body = svc.settings.max_body_bytes

    # ---------------------------------------------------------------- answers
    @staticmethod
    async def reply(send, status: int, body: dict, headers: list | None = None) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": data})

    def _too_large(self, n: int | str) -> dict:
        return {"detail": f"request body too large: {n} bytes; the limit is {self.max_body}", "error": "too_large"}

    def _limited(self, what: str, per_minute: float, burst: int, wait: float) -> tuple[dict, list]:
        return ({"detail": f"rate limit ({what}): at most {per_minute:g} requests per minute (burst {burst}); "
                           f"retry in {wait:.2f} s", "error": "rate_limited"},
                [(b"retry-after", str(max(1, round(wait + 0.5))).encode())])

    # ------------------------------------------------------------------- ASGI
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_secure(msg):
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", API_CSP.encode()))
                if scope.get("scheme") == "https":  # behind a TLS proxy that says so (--proxy-headers)
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                msg = {**msg, "headers": headers + extra}
            await send(msg)

        if not scope["path"].startswith("/api"):
            return await self.app(scope, receive, send_secure)
        headers = dict(scope.get("headers") or [])
        denied = await self._rate_limit(scope, headers)
        if denied is not None:
            return await self.reply(send_secure, 429, *denied)
        receive = await self._bounded_body(scope, headers, receive, send_secure)
        if receive is None:
            return None
        return await self.app(scope, receive, send_secure)

    async def _rate_limit(self, scope, headers) -> tuple[dict, list] | None:
        svc, st = self.svc, self.svc.settings
        client = (scope.get("client") or ("?", 0))[0]
        ok, wait = svc.address_limiter.allow(f"a:{client}")
        if not ok:
            return self._limited("per address", st.rate_limit_per_address_per_minute, st.rate_limit_address_burst,
                                 wait)
        token = bearer(headers)
        principal: Principal | None = None
        if token:
            principal = svc.auth.cached(token)
            if principal is None:
                principal = await asyncio.to_thread(svc.auth.authenticate, token)
            scope[SCOPE_KEY] = (token, principal)
            if principal is None:
                ok, wait = svc.failure_limiter.allow(f"f:{client}")
                if not ok:
                    return self._limited("wrong tokens per address", st.auth_failures_per_minute,
                                         st.auth_failures_burst, wait)
                return None
            for key in (f"u:{principal.user_id}", f"t:{principal.token_id}"):
                ok, wait = svc.limiter.allow(key)
                if not ok:
                    return self._limited("per account" if key[0] == "u" else "per token", st.rate_limit_per_minute,
                                         st.rate_limit_burst, wait)
        return None

    async def _bounded_body(self, scope, headers, receive, send):
        """Read the whole body (at most ``max_body`` bytes) before the app runs."""
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = self.max_body + 1
            if n > self.max_body:
                await self.reply(send, 413, self._too_large(n))
                return None
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") and length is None \
                and b"transfer-encoding" not in headers:
            return receive
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return receive  # the client went away: let the app see it
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_body:
                await self.reply(send, 413, self._too_large(f"more than {self.max_body}"))
                return None
            chunks.append(body)
            if not msg.get("more_body"):
                break
        whole = b"".join(chunks)
        if b"\\u0000" in whole:  # a cheap screen: parse only then
            field = nul_field(whole)
            if field is not None:
                msg = "text may not contain the NUL character (\\u0000): the database cannot store it"
                await self.reply(send, 422, {"field": field, "message": f"{field}: {msg}", "detail": [
                    {"loc": ["body", *field.split(".")], "msg": msg, "type": "value_error", "field": field}]})
                return None
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return replay
