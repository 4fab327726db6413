"""What the schemes refuse since they were hardened: each test fails on the earlier checks.

Timestamps must be whole seconds in digits; signatures cover the exact body bytes; empty
secrets are missing secrets; comparisons take constant time; unknown scheme names are errors.
"""

import asyncio
import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import quote_from_bytes

import pytest

from generic_connector.auth import AuthConfigError, AuthFailed, auth_schema, build_auth
from generic_connector.expressions import Expression
from generic_connector.functions import Scope
from generic_connector.handshakes import Handshake
from generic_connector.request import IncomingRequest

PAYLOADS = Path(__file__).resolve().parent / "payloads"
SLACK = json.loads((PAYLOADS / "slack" / "signature_example.json").read_text())
SLACK_AUTH = dict(
    type="hmac", secret_env="SLACK_SIGNING_SECRET", header="X-Slack-Signature", prefix="v0=",
    signed="v0:{timestamp}:{body}", timestamp_header="X-Slack-Request-Timestamp", max_age=300,
)  # fmt: skip
META_AUTH = dict(
    type="hmac", secret_env="APP_SECRET", header="X-Hub-Signature-256", prefix="sha256="
)
TWILIO_AUTH = dict(
    type="hmac", secret_env="TWILIO_AUTH_TOKEN", header="X-Twilio-Signature", algorithm="sha1",
    encoding="base64", signed="{url}{form_params}", public_url_env="TWILIO_WEBHOOK_URL",
)  # fmt: skip
TWILIO_URL = "https://example.com/webhooks/twilio/webhook"
NOW = float(SLACK["timestamp"])


def check(
    auth: Any, body: bytes, headers: Dict[str, str], parsed: Any = None, now: float = NOW
) -> None:
    request = IncomingRequest.from_parts(body, headers)
    asyncio.run(build_auth(auth).check(request, parsed, now))


def mac(secret: bytes, message: bytes, digest: Any = hashlib.sha256) -> bytes:
    return hmac.new(secret, message, digest).digest()


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SLACK["signing_secret"])
    monkeypatch.setenv("APP_SECRET", "app-secret")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-auth-token")
    monkeypatch.setenv("TWILIO_WEBHOOK_URL", TWILIO_URL)


# --- Timestamps are whole seconds in ASCII digits ------------------------------------------


def slack_headers(stamp: str, body: bytes) -> Dict[str, str]:
    """Headers a holder of the secret signs: a correct signature over whatever ``stamp`` is."""
    signature = mac(SLACK["signing_secret"].encode(), f"v0:{stamp}:".encode() + body)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + signature.hex()}


@pytest.mark.parametrize(
    "stamp",
    [
        "NaN", "nan", "-nan", "inf", "Infinity", "1e3", "", "1531420618.0", " 1531420618",
        "1531420618 ", "+1531420618", "-1531420618", "1_531_420_618", "1531420618\n",
        "\u0661\u0665\u0663\u0661\u0664\u0662\u0660\u0666\u0661\u0668", "0x5b47a8ca",
        "9" * 400,
    ],
    ids=[
        "NaN", "nan", "-nan", "inf", "Infinity", "exponent", "empty", "decimal point",
        "leading space", "trailing space", "plus sign", "minus sign", "underscores",
        "newline", "Arabic-Indic digits", "hex", "400 digits",
    ],
)  # fmt: skip
def test_a_timestamp_that_is_not_whole_seconds_is_refused(stamp: str) -> None:
    # float() took all of these; NaN passed the freshness window, as NaN > 300 is false.
    body = SLACK["body"].encode()
    with pytest.raises(AuthFailed, match="no valid X-Slack-Request-Timestamp header"):
        check(SLACK_AUTH, body, slack_headers(stamp, body))


def test_the_slack_example_still_passes_with_its_integer_timestamp() -> None:
    body = SLACK["body"].encode()
    check(SLACK_AUTH, body, slack_headers(str(SLACK["timestamp"]), body))


# --- Signatures over the exact body bytes --------------------------------------------------


def test_hmac_covers_the_raw_body_bytes() -> None:
    body = b'{"text": "caf\xe9"}'  # Latin-1, not UTF-8
    signature = "sha256=" + mac(b"app-secret", body).hex()
    check(META_AUTH, body, {"X-Hub-Signature-256": signature})


def test_different_invalid_utf8_bodies_do_not_share_a_signature() -> None:
    # Decoded with errors='replace', both bodies were '{"text": "\ufffd"}': one signature fit both.
    signed = b'{"text": "\xff"}'
    replaced = signed.decode("utf-8", "replace").encode("utf-8")
    for signature in (mac(b"app-secret", signed), mac(b"app-secret", replaced)):
        with pytest.raises(AuthFailed, match="signature does not match"):
            headers = {"X-Hub-Signature-256": "sha256=" + signature.hex()}
            check(META_AUTH, b'{"text": "\xfe"}', headers)


def twilio_signature(params: List[Tuple[bytes, bytes]]) -> str:
    signed = TWILIO_URL.encode() + b"".join(name + value for name, value in sorted(params))
    return base64.b64encode(mac(b"twilio-auth-token", signed, hashlib.sha1)).decode()


def test_twilio_form_parameters_are_signed_as_bytes() -> None:
    params = [(b"Body", b"\xff"), (b"From", b"+14158675310")]
    body = "&".join(quote_from_bytes(n) + "=" + quote_from_bytes(v) for n, v in params).encode()
    headers = {"X-Twilio-Signature": twilio_signature(params)}
    check(TWILIO_AUTH, body, headers)
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(TWILIO_AUTH, body.replace(b"%FF", b"%FE"), headers)


# --- Empty secrets are missing secrets ------------------------------------------------------


def test_an_empty_hmac_secret_refuses_even_an_empty_key_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_SECRET", "")
    scheme = build_auth(META_AUTH)
    assert scheme.env_names() == ["APP_SECRET"]
    assert scheme.problems() == ["environment variable APP_SECRET is empty"]
    body = b'{"object": "page"}'
    headers = {"X-Hub-Signature-256": "sha256=" + mac(b"", body).hex()}
    with pytest.raises(AuthFailed, match="environment variable APP_SECRET is empty"):
        check(META_AUTH, body, headers)


def test_an_unset_secret_refuses_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APP_SECRET")
    with pytest.raises(AuthFailed, match="environment variable APP_SECRET is not set"):
        check(META_AUTH, b"{}", {"X-Hub-Signature-256": "sha256=" + mac(b"", b"{}").hex()})


@pytest.mark.parametrize("value", ["whsec_", "whsec_not*base64", "whsec_===="])
def test_a_whsec_secret_that_decodes_to_no_key_refuses(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("APP_SECRET", value)
    auth = dict(META_AUTH, secret_encoding="whsec")
    headers = {"X-Hub-Signature-256": "sha256=" + mac(b"", b"{}").hex()}
    with pytest.raises(AuthFailed, match="APP_SECRET"):
        check(auth, b"{}", headers)


def test_an_empty_token_with_a_prefix_matches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # prefix + "" used to be the expected value: "Authorization: Bearer " passed.
    monkeypatch.setenv("TOKEN", "")
    auth = dict(type="token", secret_env="TOKEN", header="Authorization", prefix="Bearer ")
    with pytest.raises(AuthFailed, match="environment variable TOKEN is empty"):
        check(auth, b"{}", {"Authorization": "Bearer "})


@pytest.mark.parametrize("user, password", [("", ""), ("rasa", ""), ("", "pw")])
def test_empty_basic_credentials_refuse_basic_og(
    monkeypatch: pytest.MonkeyPatch, user: str, password: str
) -> None:
    monkeypatch.setenv("USER", user)
    monkeypatch.setenv("PASSWORD", password)
    auth = dict(type="basic", username_env="USER", password_env="PASSWORD")
    sent = base64.b64encode(f"{user}:{password}".encode()).decode()  # "Og==" for ":"
    with pytest.raises(AuthFailed, match="is empty"):
        check(auth, b"", {"Authorization": f"Basic {sent}"})


def test_basic_auth_reads_the_scheme_name_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "rasa")
    monkeypatch.setenv("PASSWORD", "pw")
    auth = dict(type="basic", username_env="USER", password_env="PASSWORD")
    check(auth, b"", {"Authorization": "basic " + base64.b64encode(b"rasa:pw").decode()})
    with pytest.raises(AuthFailed, match="not valid base64"):
        check(auth, b"", {"Authorization": "Basic cmFzYTpwdw=*"})
    assert build_auth(auth).challenge == {
        "WWW-Authenticate": 'Basic realm="webhook", charset="UTF-8"'
    }


# --- Constant-time comparisons --------------------------------------------------------------


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> List[Tuple[bytes, bytes]]:
    """Every hmac.compare_digest call, recorded (and still answered by the real function)."""
    calls: List[Tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_signatures_are_compared_in_constant_time(
    comparisons: List[Tuple[bytes, bytes]],
) -> None:
    body = b'{"object": "page"}'
    expected = ("sha256=" + mac(b"app-secret", body).hex()).encode()
    check(META_AUTH, body, {"X-Hub-Signature-256": expected.decode()})
    assert comparisons == [(expected[len("sha256=") :], expected[len("sha256=") :])]


def test_tokens_are_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, comparisons: List[Tuple[bytes, bytes]]
) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    auth = dict(type="token", secret_env="TOKEN", field="token")
    with pytest.raises(AuthFailed, match="token does not match"):
        check(auth, b"", {}, parsed={"token": "s3creT"})
    assert comparisons == [(b"s3creT", b"s3cret")]


def test_basic_credentials_are_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, comparisons: List[Tuple[bytes, bytes]]
) -> None:
    monkeypatch.setenv("USER", "rasa")
    monkeypatch.setenv("PASSWORD", "pw")
    auth = dict(type="basic", username_env="USER", password_env="PASSWORD")
    check(auth, b"", {"Authorization": "Basic " + base64.b64encode(b"rasa:pw").decode()})
    assert comparisons == [(b"rasa:pw", b"rasa:pw")]


# --- Scheme names ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hmca", "HMAC", "", None, "any of"])
def test_an_unknown_scheme_is_a_configuration_error(kind: Optional[str]) -> None:
    # The old single class treated every type that was not hmac or token as basic auth.
    section = {"type": kind, "username_env": "USER", "password_env": "PASSWORD"}
    with pytest.raises(AuthConfigError, match="unknown auth scheme"):
        build_auth(section)
    import jsonschema

    assert list(jsonschema.Draft7Validator(auth_schema()).iter_errors(section))


def test_only_a_body_field_token_waits_for_the_decoded_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKEN", "t")
    needs = {
        where: build_auth({"type": "token", "secret_env": "TOKEN", where: "x"}).needs_body
        for where in ("header", "query", "field")
    }
    assert needs == {"header": False, "query": False, "field": True}
    assert build_auth(META_AUTH).needs_body is False


@pytest.mark.parametrize("body", [[{"token": "t"}], {"token": ["t", "t"]}, {"token": 1}, None])
def test_a_body_field_token_must_be_one_string(monkeypatch: pytest.MonkeyPatch, body: Any) -> None:
    monkeypatch.setenv("TOKEN", "t")
    with pytest.raises(AuthFailed, match="no token"):
        check({"type": "token", "secret_env": "TOKEN", "field": "token"}, b"", {}, parsed=body)


def test_handshake_verify_tokens_are_compared_in_constant_time(
    comparisons: List[Tuple[bytes, bytes]],
) -> None:
    handshake = Handshake(
        name="webhook verification",
        method="GET",
        path="/webhook",
        when=None,
        verify=Expression("query('hub.verify_token') == env('VERIFY_TOKEN')"),
        response=None,  # type: ignore[arg-type]  # not answered here
    )

    def verified(sent: str) -> bool:
        request = IncomingRequest.from_parts(b"", {}, {"hub.verify_token": sent}, "GET")
        return handshake.verified(None, Scope(request, None, {"VERIFY_TOKEN": "tökén"}))

    assert verified("tökén") is True
    assert verified("tökén!") is False
    assert comparisons == [
        ("tökén".encode(), "tökén".encode()),
        ("tökén!".encode(), "tökén".encode()),
    ]
    # Not two strings: the expression's own answer (null == null is true in JMESPath).
    both_null = Expression("query('nothing') == query('nothing either')")
    handshake = Handshake("h", "GET", "/", None, both_null, None)  # type: ignore[arg-type]
    assert handshake.verified(None, Scope()) is True
