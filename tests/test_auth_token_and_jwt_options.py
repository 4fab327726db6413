"""Smaller options of the ``token`` and ``jwt`` schemes: a token in a nested body field, JWT
claims compared with expressions over the request, key URLs read from the environment."""

import asyncio
import time
from typing import Any, Dict, List, Optional

import jwt
import pytest

from generic_connector.auth import AuthFailed, AuthScheme, build_auth
from generic_connector.config import check_channel
from generic_connector.request import IncomingRequest


def run(scheme: AuthScheme, body: Any = None, headers: Optional[Dict[str, str]] = None) -> None:
    request = IncomingRequest.from_parts(b"", headers or {})
    asyncio.run(scheme.check(request, body, time.time()))


def findings(auth: Any) -> List[Any]:
    entry = {"name": "o", "request": {"sender": "s", "text": "t"}, "auth": auth}
    config, found, _ = check_channel(entry)
    assert config is None
    return [(finding.code, finding.path) for finding in found]


# --- token in a nested body field ------------------------------------------------------------


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")


def test_a_dotted_field_is_a_path_into_the_body(token_env: None) -> None:
    scheme = build_auth({"type": "token", "secret_env": "TOKEN", "field": "header.token"})
    assert scheme.needs_body is True
    run(scheme, {"header": {"token": "s3cret"}, "event": {}})
    for body in ({"header": {"token": "wrong"}}, {"header": "s3cret"}, {"header": {}}, [], None):
        with pytest.raises(AuthFailed):
            run(scheme, body)


def test_a_top_level_field_with_a_dot_in_its_name_still_matches(token_env: None) -> None:
    scheme = build_auth({"type": "token", "secret_env": "TOKEN", "field": "auth.token"})
    run(scheme, {"auth.token": "s3cret"})  # a form field named so


def test_a_list_on_the_path_is_no_token(token_env: None) -> None:
    scheme = build_auth({"type": "token", "secret_env": "TOKEN", "field": "a.b"})
    with pytest.raises(AuthFailed, match="no token"):
        run(scheme, {"a": [{"b": "s3cret"}]})


@pytest.mark.parametrize("field", ["", ".token", "header.", "header..token"])
def test_a_field_that_is_no_path_is_a_finding(field: str) -> None:
    assert findings({"type": "token", "secret_env": "TOKEN", "field": field}) == [
        ("invalid-value", "o.auth.field")
    ]


# --- jwt: claims compared with expressions ----------------------------------------------------

SECRET = "a-jwt-secret-of-at-least-32-bytes!!"


def hs256(**claims: Any) -> Dict[str, str]:
    payload = {"exp": time.time() + 60, **claims}
    return {"Authorization": "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256")}


@pytest.fixture
def claims_scheme(monkeypatch: pytest.MonkeyPatch) -> AuthScheme:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("APP_ID", "app-42")
    return build_auth(
        {
            "type": "jwt",
            "algorithms": ["HS256"],
            "secret_env": "JWT_SECRET",
            "claim_expressions": {"sub": "header('X-Account')", "app": "env('APP_ID')"},
        }
    )


def test_claims_must_equal_their_expressions(claims_scheme: AuthScheme) -> None:
    assert sorted(claims_scheme.env_names()) == ["APP_ID", "JWT_SECRET"]
    assert claims_scheme.needs_body is False
    run(claims_scheme, headers={"X-Account": "u1", **hs256(sub="u1", app="app-42")})
    with pytest.raises(AuthFailed, match="'sub' does not have the value of its expression"):
        run(claims_scheme, headers={"X-Account": "u2", **hs256(sub="u1", app="app-42")})
    with pytest.raises(AuthFailed, match="'app' does not have the value of its expression"):
        run(claims_scheme, headers={"X-Account": "u1", **hs256(sub="u1", app="other")})


def test_a_claim_whose_expression_gives_null_refuses(claims_scheme: AuthScheme) -> None:
    with pytest.raises(AuthFailed):  # no X-Account header: null never matches
        run(claims_scheme, headers=hs256(sub=None, app="app-42"))
    with pytest.raises(AuthFailed, match="sub"):  # the claim is required
        run(claims_scheme, headers={"X-Account": "u1", **hs256(app="app-42")})


def test_a_claim_expression_over_the_body_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    scheme = build_auth(
        {"type": "jwt", "algorithms": ["HS256"], "secret_env": "JWT_SECRET",
         "claim_expressions": {"sub": "message.sender"}}
    )  # fmt: skip
    assert scheme.needs_body is True
    run(scheme, {"message": {"sender": "u1"}}, hs256(sub="u1"))


def test_an_invalid_claim_expression_is_a_finding() -> None:
    section = {"type": "jwt", "algorithms": ["HS256"], "secret_env": "S",
               "claim_expressions": {"sub": "env(header('x'))"}}  # fmt: skip
    assert findings(section) == [("expression-invalid", "o.auth.claim_expressions.sub")]


# --- jwt: key URLs from the environment -------------------------------------------------------

PUBLIC = {"type": "jwt", "algorithms": ["RS256"], "audience": "1234567890"}


@pytest.mark.parametrize("key, kind", [("jwks_url_env", "jwks"), ("x509_url_env", "x509"),
                                       ("openid_url_env", "openid")])  # fmt: skip
def test_a_key_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: str, kind: str
) -> None:
    monkeypatch.setenv("KEYS_URL", "https://keys.example.com/certs")
    scheme = build_auth(dict(PUBLIC, **{key: "KEYS_URL"}))
    assert scheme.env_names() == ["KEYS_URL"] and scheme.problems() == []
    keys = scheme._keys  # type: ignore[attr-defined]
    assert (keys.url, keys.kind) == ("https://keys.example.com/certs", kind)


@pytest.mark.parametrize(
    "value, problem",
    [
        ("http://keys.example.com/certs", "KEYS_URL is not an https URL"),
        ("keys.example.com", "KEYS_URL is not an https URL"),
        (None, "environment variable KEYS_URL is not set"),
    ],
)
def test_a_key_url_variable_that_is_no_https_url_makes_the_scheme_unusable(
    monkeypatch: pytest.MonkeyPatch, value: Optional[str], problem: str
) -> None:
    if value is None:
        monkeypatch.delenv("KEYS_URL", raising=False)
    else:
        monkeypatch.setenv("KEYS_URL", value)
    scheme = build_auth(dict(PUBLIC, jwks_url_env="KEYS_URL"))
    [found] = scheme.problems()
    assert problem in found
    assert value is None or value not in found
    with pytest.raises(AuthFailed, match="KEYS_URL"):
        run(scheme, headers={"Authorization": "Bearer x.y.z"})


def test_a_url_and_its_variable_together_are_a_finding() -> None:
    section = dict(PUBLIC, jwks_url="https://keys.example.com/", jwks_url_env="KEYS_URL")
    assert [code for code, _ in findings(section)] == ["invalid-value"]
    assert findings(dict(PUBLIC, jwks_url_env="KEYS_URL", secret_env="S"))
