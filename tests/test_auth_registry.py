"""The scheme registry, the ``auth`` schema assembled from it, and lists of schemes (any of)."""

import asyncio
import base64
from pathlib import Path
from typing import Any, Dict, Iterator, List

import jsonschema
import pytest
import yaml

from generic_connector.auth import (
    AUTH_SCHEMES,
    AnyOf,
    AuthConfigError,
    AuthFailed,
    AuthScheme,
    AuthUnavailable,
    auth_schema,
    build_auth,
    register,
)
from generic_connector.request import IncomingRequest

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
VALIDATOR = jsonschema.Draft7Validator(auth_schema())


def errors(section: Any) -> List[str]:
    return [error.message for error in VALIDATOR.iter_errors(section)]


def test_the_registered_schemes() -> None:
    assert sorted(AUTH_SCHEMES) == ["basic", "ed25519", "expression", "hmac", "jwt", "rsa", "token"]
    for name, cls in AUTH_SCHEMES.items():
        assert cls.name == name and issubclass(cls, AuthScheme)
        assert cls.__doc__ and cls.__module__ == f"generic_connector.auth.{name}"


@pytest.mark.parametrize("name", sorted(AUTH_SCHEMES))
def test_each_fragment_is_a_standalone_schema_of_the_whole_section(name: str) -> None:
    schema = AUTH_SCHEMES[name].schema
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["type"]["const"] == name
    assert "type" in schema["required"] and schema["description"]
    for key, spec in schema["properties"].items():
        assert spec.get("description"), f"{name}.{key} has no description"
    # The loader validates a section with the fragment alone: no references to elsewhere.
    assert "$ref" not in str(schema)


def test_the_auth_schema_is_a_copy() -> None:
    schema = auth_schema()
    schema["else"]["allOf"].clear()
    assert auth_schema()["else"]["allOf"]


def test_every_shipped_mapping_has_a_valid_auth_section_that_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = 0
    for path in sorted(MAPPINGS.glob("*.yml")):
        section = (yaml.safe_load(path.read_text()) or {}).get("auth")
        if section is None:
            continue
        found += 1
        assert errors(section) == [], path.name
        for one in section if isinstance(section, list) else [section]:  # a list: any of them
            schema = AUTH_SCHEMES[one["type"]].schema
            assert not list(jsonschema.Draft7Validator(schema).iter_errors(one)), path.name
        for name in build_auth(section).env_names():
            monkeypatch.setenv(name, "set")
        # Set, so nothing is missing (a value of the right form is the mapping tests' business).
        problems = build_auth(section).problems()
        assert not [p for p in problems if p.endswith(("not set", "empty"))], path.name
    assert found >= 7


SECTIONS: List[Dict[str, Any]] = [
    {"type": "hmac", "secret_env": "S", "header": "X-Hub-Signature-256", "prefix": "sha256="},
    {"type": "token", "secret_env": "T", "field": "token"},
    {"type": "basic", "username_env": "U", "password_env": "P"},
    {"type": "ed25519", "public_key_env": "K", "header": "X-Signature-Ed25519",
     "timestamp_header": "X-Signature-Timestamp", "signed": "{timestamp}{body}"},
    {"type": "jwt", "algorithms": ["HS256"], "secret_env": "S", "max_age": 300,
     "required_claims": ["iat"]},
]  # fmt: skip


@pytest.mark.parametrize("section", SECTIONS, ids=[s["type"] for s in SECTIONS])
def test_valid_sections_alone_and_in_lists(section: Dict[str, Any]) -> None:
    assert errors(section) == []
    assert errors([section]) == []
    assert errors(SECTIONS) == []


@pytest.mark.parametrize(
    "section",
    [
        {"type": "hmac", "secret_env": "S"},
        {"type": "hmac", "secret_env": "S", "header": "h", "username_env": "U"},
        {"type": "hmac", "secret_env": "S", "header": "h", "signed": "{timestamp}.{body}"},
        {"type": "hmac", "secret_env": "S", "header": "h", "signed": "{id}.{body}"},
        {"type": "hmac", "secret_env": "S", "header": "h", "signed": "{body"},
        {"type": "hmac", "secret_env": "S", "header": "h", "signed": "{0}"},
        {"type": "hmac", "secret_env": "S", "header": "h", "algorithm": "md5"},
        {"type": "hmac", "secret_env": "S", "header": "h", "max_age": 0},
        {"type": "hmac", "secret_env": "not a name", "header": "h"},
        {"type": "token", "secret_env": "T"},
        {"type": "token", "secret_env": "T", "header": "h", "field": "f"},
        {"type": "basic", "username_env": "U"},
        {"type": "ed25519", "public_key_env": "K", "header": "h", "signed": "{url}{body}"},
        {"type": "ed25519", "public_key_env": "K", "header": "h", "key_encoding": "pem"},
        {"type": "nope"},
        {"secret_env": "S", "header": "h"},
        [],
        [[{"type": "basic", "username_env": "U", "password_env": "P"}]],
        "hmac",
    ],
    ids=[
        "hmac without header",
        "a key of another scheme",
        "timestamp without its header",
        "id without its header",
        "unbalanced brace",
        "positional placeholder",
        "unknown digest",
        "zero window",
        "bad variable name",
        "token without place",
        "token in two places",
        "basic without password",
        "ed25519 url placeholder",
        "unknown key encoding",
        "unknown type",
        "no type",
        "empty list",
        "nested list",
        "a string",
    ],
)
def test_invalid_sections_are_refused_by_the_schema_and_by_build_auth(section: Any) -> None:
    assert errors(section), "the auth schema accepted it"
    with pytest.raises(AuthConfigError):
        build_auth(section)


def test_build_auth_says_where_and_what() -> None:
    with pytest.raises(AuthConfigError, match=r"auth\[1\]\.type: unknown auth scheme 'hamc'"):
        build_auth([SECTIONS[0], {"type": "hamc"}])
    with pytest.raises(AuthConfigError, match="'timestamp_header' is a required property"):
        build_auth({"type": "hmac", "secret_env": "S", "header": "h", "signed": "{timestamp}"})
    with pytest.raises(AuthConfigError, match=r"auth\.max_age: 0 is less than or equal"):
        build_auth({"type": "hmac", "secret_env": "S", "header": "h", "max_age": 0})


# --- Adding a scheme ---------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[None]:
    before = dict(AUTH_SCHEMES)
    yield
    AUTH_SCHEMES.clear()
    AUTH_SCHEMES.update(before)


def test_a_new_scheme_is_one_registered_class(registry: None) -> None:
    @register
    class Header(AuthScheme):
        """Pass when a header is present (a test scheme)."""

        name = "test-header"
        schema = {
            "description": "a header is present",
            "type": "object",
            "additionalProperties": False,
            "required": ["type", "header"],
            "properties": {
                "type": {"const": "test-header", "description": "Test."},
                "header": {"type": "string", "description": "The header."},
            },
        }

        def __init__(self, section: Dict[str, Any]) -> None:
            super().__init__(section)
            self.header = section["header"]

        async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
            if not request.header(self.header):
                raise AuthFailed(f"no {self.header}")

    assert jsonschema.Draft7Validator(auth_schema()).is_valid(
        {"type": "test-header", "header": "h"}
    )
    assert not jsonschema.Draft7Validator(auth_schema()).is_valid({"type": "test-header"})
    scheme = build_auth({"type": "test-header", "header": "X-Here"})
    asyncio.run(scheme.check(IncomingRequest.from_parts(b"", {"X-Here": "1"}), None, 0))
    with pytest.raises(AuthFailed, match="no X-Here"):
        asyncio.run(scheme.check(IncomingRequest.from_parts(b"", {}), None, 0))


def test_register_refuses_duplicates_and_inconsistent_schemas(registry: None) -> None:
    class Duplicate(AuthScheme):
        name = "hmac"
        schema = AUTH_SCHEMES["hmac"].schema

    with pytest.raises(ValueError, match="already registered"):
        register(Duplicate)

    class Mismatch(AuthScheme):
        name = "mismatch"
        schema = {"type": "object", "properties": {"type": {"const": "other"}}}

    with pytest.raises(ValueError, match="must have type"):
        register(Mismatch)


# --- Any of a list ---------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    monkeypatch.setenv("USER", "rasa")
    monkeypatch.setenv("PASSWORD", "pw")


TOKEN = {"type": "token", "secret_env": "TOKEN", "header": "X-Token"}
FIELD = {"type": "token", "secret_env": "TOKEN", "field": "token"}
BASIC = {"type": "basic", "username_env": "USER", "password_env": "PASSWORD"}
BASIC_HEADER = {"Authorization": "Basic " + base64.b64encode(b"rasa:pw").decode()}


def run(scheme: AuthScheme, headers: Dict[str, str], body: Any = None) -> None:
    asyncio.run(scheme.check(IncomingRequest.from_parts(b"", headers), body, 0))


def test_a_list_passes_what_any_of_its_schemes_passes(env: None) -> None:
    scheme = build_auth([TOKEN, BASIC])
    assert isinstance(scheme, AnyOf)
    run(scheme, {"X-Token": "s3cret"})
    run(scheme, BASIC_HEADER)
    with pytest.raises(
        AuthFailed,
        match=r"no scheme accepted the request \(token: no token; basic: no basic credentials\)",
    ):
        run(scheme, {})


def test_a_list_of_one_is_that_scheme(env: None) -> None:
    assert type(build_auth([BASIC])) is AUTH_SCHEMES["basic"]


def test_a_list_collects_what_its_schemes_need(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    scheme = build_auth([TOKEN, FIELD, BASIC])
    assert scheme.env_names() == ["TOKEN", "USER", "PASSWORD"]
    assert scheme.needs_body is True  # one of them reads a body field
    assert scheme.challenge == AUTH_SCHEMES["basic"].challenge
    assert build_auth([TOKEN, TOKEN]).needs_body is False
    assert build_auth([TOKEN, TOKEN]).challenge is None
    run(scheme, {}, {"token": "s3cret"})
    monkeypatch.setenv("PASSWORD", "")
    assert build_auth([TOKEN, BASIC]).problems() == ["environment variable PASSWORD is empty"]
    run(build_auth([TOKEN, BASIC]), {"X-Token": "s3cret"})  # the usable scheme still passes


def test_a_list_is_unavailable_only_when_no_scheme_passed(env: None) -> None:
    class Down(AuthScheme):
        name = "down"

        async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
            raise AuthUnavailable("key server down")

    either = AnyOf([Down({}), build_auth(TOKEN)])
    run(either, {"X-Token": "s3cret"})
    with pytest.raises(AuthUnavailable, match="down: key server down; token: no token"):
        run(either, {})


def test_a_scheme_never_shows_its_secret(env: None) -> None:
    assert "s3cret" not in repr(build_auth([TOKEN, BASIC]))
