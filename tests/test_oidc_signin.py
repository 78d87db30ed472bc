"""Sign-in through an OpenID Connect provider, against a real provider process
(``oidc-provider-mock``: Authlib's provider on werkzeug, in a thread on loopback) and a
real sdl service: login, a wrong audience, an expired ID token, a replayed state, a
forged signature, an unlinked subject; roles and memberships stay sdl's."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from sdl.client import Client
from sdl.service.testing import start_lab

oidc_provider_mock = pytest.importorskip("oidc_provider_mock", reason="pip install oidc-provider-mock (test extra)")

CLIENT_ID, SECRET = "sdl-test", "s3cret-of-sdl"
MAX_AGE_S = 4  # the provider's ID tokens live this long (the expiry test waits it out)


@pytest.fixture(scope="module")
def provider():
    users = [oidc_provider_mock.User(sub="alice@uni.example", claims={"email": "alice@uni.example",
                                                                       "preferred_username": "alice"})]
    with oidc_provider_mock.run_server_in_thread(access_token_max_age=dt.timedelta(seconds=MAX_AGE_S),
                                                 user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, provider):
    lab = start_lab(tmp_path_factory.mktemp("svc-oidc"), ["sim-xrd"], oidc_issuer=provider, oidc_client_id=CLIENT_ID,
                    oidc_client_secret=SECRET, oidc_clock_leeway_s=0)
    yield lab
    lab.close()
    lab.server.stop()


@pytest.fixture(scope="module")
def alice(lab):
    out = lab.admin.create_user("oi-alice", email="alice@uni.example")
    lab.admin.post(f"/api/users/{out['user']['id']}/identities", {"subject": "alice@uni.example"})
    return out["user"]


def browser_sign_in(lab, sub: str) -> tuple[httpx.Client, str, httpx.Response]:
    """The web page's flow: sdl -> provider (the person says who they are) -> sdl."""
    browser = httpx.Client(base_url=lab.url, follow_redirects=False, timeout=20)
    r = browser.get("/api/auth/login")
    assert r.status_code == 302, r.text
    at_provider = r.headers["location"]
    q = parse_qs(urlsplit(at_provider).query)
    assert q["client_id"] == [CLIENT_ID] and q["state"][0] and q["nonce"][0] and "openid" in q["scope"][0]
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) >= 43
    r = httpx.post(at_provider, data={"sub": sub}, follow_redirects=False, timeout=20)
    assert r.status_code in (302, 303), r.text[:300]
    callback = r.headers["location"]
    assert callback.startswith(lab.url + "/api/auth/callback?")
    return browser, callback, browser.get(callback)


def id_token_for(provider: str, client_id: str, sub: str = "alice@uni.example") -> str:
    """An ID token the provider issues to ``client_id`` (the code flow, done by a program)."""
    redirect = "http://127.0.0.1:9/cb"
    q = urlencode({"client_id": client_id, "redirect_uri": redirect, "response_type": "code", "scope": "openid email",
                   "state": "x", "nonce": "n"})
    r = httpx.post(f"{provider}/oauth2/authorize?{q}", data={"sub": sub}, follow_redirects=False, timeout=20)
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    r = httpx.post(f"{provider}/oauth2/token", data={"grant_type": "authorization_code", "code": code,
                                                     "redirect_uri": redirect}, auth=(client_id, "x"), timeout=20)
    r.raise_for_status()
    return r.json()["id_token"]


def test_browser_sign_in_gives_the_linked_account_a_token(lab, alice):
    _, _, r = browser_sign_in(lab, "alice@uni.example")
    assert r.status_code == 302 and r.headers["location"].startswith("/#token=sdl_")
    token = r.headers["location"].split("=", 1)[1]
    me = Client(lab.url, token).me()
    assert me["id"] == alice["id"] and me["role"] == "user" and me["proposals"] == {}  # sdl's roles and membership
    promoted = lab.admin.request("PATCH", f"/api/users/{alice['id']}", json={"role": "scientist"})
    assert promoted["role"] == "scientist" and Client(lab.url, token).me()["role"] == "scientist"
    lab.admin.request("PATCH", f"/api/users/{alice['id']}", json={"role": "user"})
    audit = lab.admin.get("/api/audit", action="auth.sign_in")
    assert audit and audit[0]["detail"]["subject"] == "alice@uni.example"


def test_signing_in_again_and_again_stays_within_the_token_cap(lab, alice):
    cap = lab.service.settings.max_tokens_per_account
    tokens = []
    for _ in range(cap + 2):
        _, _, r = browser_sign_in(lab, "alice@uni.example")
        assert r.status_code == 302, r.text
        tokens.append(r.headers["location"].split("=", 1)[1])
    mine = Client(lab.url, tokens[-1]).get("/api/tokens")
    assert len([t for t in mine if t["revoked_at"] is None]) <= cap
    assert Client(lab.url, tokens[-1]).me()["id"] == alice["id"]
    assert Client(lab.url, tokens[0]).http.get("/api/me").status_code == 401  # the oldest made room


def test_unlinked_subject_is_refused(lab):
    _, _, r = browser_sign_in(lab, "mallory@elsewhere.example")
    assert r.status_code == 403 and r.json()["error"] == "forbidden" and "link" in r.json()["detail"]


def test_replayed_state_and_another_browser_are_refused(lab, alice):
    browser, callback, r = browser_sign_in(lab, "alice@uni.example")
    assert r.status_code == 302
    again = browser.get(callback)  # the same state (and code) once more
    assert again.status_code == 401 and "state" in again.json()["detail"]
    other = httpx.Client(base_url=lab.url, follow_redirects=False, timeout=20)
    r = other.get("/api/auth/login")
    r = httpx.post(r.headers["location"], data={"sub": "alice@uni.example"}, follow_redirects=False, timeout=20)
    stranger = httpx.get(r.headers["location"], follow_redirects=False, timeout=20)  # no binding cookie
    assert stranger.status_code == 401 and "another browser" in stranger.json()["detail"]


def test_id_token_exchange_for_an_api_token(lab, provider, alice):
    tok = id_token_for(provider, CLIENT_ID)
    r = httpx.post(lab.url + "/api/auth/token", json={"id_token": tok}, timeout=20)
    assert r.status_code == 201, r.text
    assert Client(lab.url, r.json()["token"]).me()["id"] == alice["id"]
    r = httpx.post(lab.url + "/api/auth/token", json={"id_token": tok}, timeout=20)
    assert r.status_code == 401 and "already" in r.json()["detail"]  # each ID token once


def test_wrong_audience_is_refused(lab, provider, alice):
    tok = id_token_for(provider, "some-other-service")
    r = httpx.post(lab.url + "/api/auth/token", json={"id_token": tok}, timeout=20)
    assert r.status_code == 401 and "aud" in r.json()["detail"], r.text


def test_forged_signature_is_refused(lab, provider, alice):
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    real = id_token_for(provider, CLIENT_ID)
    header, payload, sig = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))).get("kid")
    forged = jwt.encode({"alg": "RS256", **({"kid": kid} if kid else {})}, claims,
                        RSAKey.generate_key(2048, parameters={"kid": kid} if kid else None))
    r = httpx.post(lab.url + "/api/auth/token", json={"id_token": forged}, timeout=20)
    assert r.status_code == 401 and "signature" in r.json()["detail"], r.text
    claims["sub"] = "someone-else"
    tampered = header + "." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + sig
    r = httpx.post(lab.url + "/api/auth/token", json={"id_token": tampered}, timeout=20)
    assert r.status_code == 401 and "signature" in r.json()["detail"], r.text
    unsigned = (base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode() + "."
                + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + ".")
    r = httpx.post(lab.url + "/api/auth/token", json={"id_token": unsigned}, timeout=20)
    assert r.status_code == 401, r.text


def test_expired_id_token_is_refused(lab, provider, alice):
    tok = id_token_for(provider, CLIENT_ID)
    time.sleep(MAX_AGE_S + 1.5)
    r = httpx.post(lab.url + "/api/auth/token", json={"id_token": tok}, timeout=20)
    assert r.status_code == 401 and "expired" in r.json()["detail"], r.text


def test_sign_in_is_not_there_without_a_provider(tmp_path):
    lab = start_lab(tmp_path, ["sim-xrd"], start_workers=False)
    try:
        r = httpx.get(lab.url + "/api/auth/login", follow_redirects=False)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    finally:
        lab.close()
        lab.server.stop()


def test_an_unreachable_provider_is_a_502_not_a_500(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lab = start_lab(tmp_path, ["sim-xrd"], start_workers=False, oidc_issuer=f"http://127.0.0.1:{port}",
                    oidc_client_id=CLIENT_ID)
    try:
        r = httpx.get(lab.url + "/api/auth/login", follow_redirects=False)
        assert r.status_code == 502 and r.json()["error"] == "identity_provider_unavailable", r.text
        r = httpx.post(lab.url + "/api/auth/token", json={"id_token": "a.b.c" * 5})
        assert r.status_code == 502, r.text
    finally:
        lab.close()
        lab.server.stop()
