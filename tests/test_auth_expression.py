"""The ``expression`` scheme: a signature an expression computes over the request, compared
with the one the request carries.

Expected signatures are computed here with Python's ``hmac`` and ``hashlib`` from the string
each platform documents as signed, or taken from a platform's published example (WeCom).
"""

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from generic_connector.auth import AuthFailed, AuthScheme, build_auth
from generic_connector.auth import _common as common
from generic_connector.auth._expressions import parse_time
from generic_connector.config import check_channel, environment_problems
from generic_connector.pipeline import Pipeline, authenticate, authenticate_body
from generic_connector.request import IncomingRequest, decode_body

PAYLOADS = Path(__file__).resolve().parent / "payloads"
WECOM = json.loads((PAYLOADS / "wecom" / "crypto_vectors.json").read_text())
WECOM_BODY = (PAYLOADS / "wecom" / WECOM["message"]["body_file"]).read_bytes()


def check(
    scheme: AuthScheme,
    body: bytes = b"",
    headers: Optional[Dict[str, str]] = None,
    query: Optional[Dict[str, str]] = None,
    now: float = 0.0,
    decoded: Any = None,
) -> None:
    request = IncomingRequest.from_parts(body, headers or {}, query or {})
    asyncio.run(scheme.check(request, decoded, now))


# --- HMAC-SHA256 over an RFC 3339 timestamp and the body ------------------------------------

SECRET = "an example signing secret"
STAMPED = {
    "type": "expression",
    "expected": "hmac('sha256', env('SECRET'), join('', [header('X-Timestamp'), raw_body()]), "
    "'base64')",
    "given": "header('X-Signature')",
    "timestamp": {"value": "header('X-Timestamp')", "format": "rfc3339", "tolerance": 300},
}
STAMP = "2026-12-07T05:33:49Z"
STAMP_SECONDS = datetime(2026, 12, 7, 5, 33, 49, tzinfo=timezone.utc).timestamp()
BODY = b'{"event":"message","text":"hello"}'


def stamped_signature(stamp: str = STAMP, body: bytes = BODY, secret: str = SECRET) -> str:
    """What the platform sends: base64(HMAC-SHA256(secret, timestamp + body))."""
    mac = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


@pytest.fixture
def stamped(monkeypatch: pytest.MonkeyPatch) -> AuthScheme:
    monkeypatch.setenv("SECRET", SECRET)
    return build_auth(STAMPED)


def stamped_headers(**changes: str) -> Dict[str, str]:
    return {"X-Timestamp": STAMP, "X-Signature": stamped_signature(), **changes}


def test_an_hmac_over_the_timestamp_and_body_passes_within_the_window(
    stamped: AuthScheme,
) -> None:
    assert stamped.needs_body is False  # raw_body() and header(): checked before decoding
    assert stamped.env_names() == ["SECRET"]
    for moment in (STAMP_SECONDS, STAMP_SECONDS + 299, STAMP_SECONDS - 299):
        check(stamped, BODY, stamped_headers(), now=moment)


@pytest.mark.parametrize("offset", [301, -301, 86400])
def test_a_timestamp_outside_the_window_is_refused(stamped: AuthScheme, offset: int) -> None:
    with pytest.raises(AuthFailed, match="outside the allowed 300 s window"):
        check(stamped, BODY, stamped_headers(), now=STAMP_SECONDS + offset)


def test_an_rfc3339_offset_is_the_same_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", SECRET)
    scheme = build_auth(STAMPED)
    stamp = "2026-12-07T06:33:49.500+01:00"  # 05:33:49.5 UTC
    headers = {"X-Timestamp": stamp, "X-Signature": stamped_signature(stamp)}
    check(scheme, BODY, headers, now=STAMP_SECONDS + 300.5)
    with pytest.raises(AuthFailed, match="window"):
        check(scheme, BODY, headers, now=STAMP_SECONDS + 301)


@pytest.mark.parametrize(
    "stamp",
    ["", "2026-12-07 05:33:49", "2026-12-07T05:33:49", "2026-02-30T05:33:49Z", "1765085629",
     "2026-12-07T05:33:49+24:00", "NaN"],
)  # fmt: skip
def test_a_timestamp_not_in_rfc3339_is_refused(stamped: AuthScheme, stamp: str) -> None:
    headers = {"X-Timestamp": stamp, "X-Signature": stamped_signature(stamp)}
    with pytest.raises(AuthFailed, match="no valid timestamp"):
        check(stamped, BODY, headers, now=STAMP_SECONDS)


def test_a_changed_body_timestamp_or_secret_is_refused(
    stamped: AuthScheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(stamped, BODY + b" ", stamped_headers(), now=STAMP_SECONDS)
    later = "2026-12-07T05:33:50Z"
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(stamped, BODY, stamped_headers(**{"X-Timestamp": later}), now=STAMP_SECONDS)
    other = stamped_signature(secret="another secret")
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(stamped, BODY, stamped_headers(**{"X-Signature": other}), now=STAMP_SECONDS)


def test_the_secret_is_read_when_the_scheme_is_built(
    stamped: AuthScheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET", "changed after start-up")
    check(stamped, BODY, stamped_headers(), now=STAMP_SECONDS)


# --- Wrong and missing signatures -------------------------------------------------------------


def test_signatures_are_compared_in_constant_time_as_utf8_bytes(
    stamped: AuthScheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: List[Any] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(common.hmac, "compare_digest", spy)
    check(stamped, BODY, stamped_headers(), now=STAMP_SECONDS)
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(stamped, BODY, stamped_headers(**{"X-Signature": "é" * 44}), now=STAMP_SECONDS)
    assert compared[0] == (stamped_signature().encode(), stamped_signature().encode())
    assert compared[1] == (("é" * 44).encode("utf-8"), stamped_signature().encode())


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({"X-Timestamp": STAMP}, "no signature"),
        ({"X-Timestamp": STAMP, "X-Signature": ""}, "no signature"),
        ({"X-Signature": "x"}, "no valid timestamp"),
        ({"X-Timestamp": STAMP, "X-Signature": "bm90IGl0"}, "signature does not match"),
    ],
    ids=["no signature", "empty signature", "no timestamp", "wrong signature"],
)
def test_wrong_and_missing_signatures_are_refused(
    stamped: AuthScheme, headers: Dict[str, str], reason: str
) -> None:
    with pytest.raises(AuthFailed, match=reason):
        check(stamped, BODY, headers, now=STAMP_SECONDS)


def test_an_expected_side_that_gives_null_or_fails_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECRET", SECRET)
    nothing = build_auth(
        {"type": "expression", "expected": "env('SECRET') && header('X-None')",
         "given": "header('X-Signature')"}
    )  # fmt: skip
    with pytest.raises(AuthFailed, match="expected gives no signature"):
        check(nothing, BODY, {"X-Signature": "null"})
    failing = build_auth({k: v for k, v in STAMPED.items() if k != "timestamp"})
    with pytest.raises(AuthFailed) as raised:
        check(failing, BODY, {"X-Signature": stamped_signature()})  # no X-Timestamp: join fails
    assert str(raised.value) == "expected could not be evaluated on this request"
    assert SECRET not in str(raised.value)


def test_a_prefix_is_removed_and_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", SECRET)
    scheme = build_auth(
        {"type": "expression", "expected": "hmac('sha256', env('SECRET'), raw_body(), 'hex')",
         "given": "header('X-Hub-Signature-256')", "prefix": "sha256="}
    )  # fmt: skip
    mac = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    check(scheme, BODY, {"X-Hub-Signature-256": f"sha256={mac}"})
    with pytest.raises(AuthFailed, match="no signature starting with 'sha256='"):
        check(scheme, BODY, {"X-Hub-Signature-256": mac})


def test_an_unset_secret_refuses_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECRET", raising=False)
    scheme = build_auth(STAMPED)
    assert scheme.problems() == ["environment variable SECRET is not set"]
    with pytest.raises(AuthFailed, match="SECRET is not set"):
        check(scheme, BODY, stamped_headers(), now=STAMP_SECONDS)


# --- WeCom: SHA-1 of the sorted token, timestamp, nonce and encrypted message ------------------

WECOM_AUTH = {
    "type": "expression",
    "expected": "sha1(join('', sort([env('WECOM_TOKEN'), query('timestamp'), query('nonce'), "
    "xml.Encrypt])))",
    "given": "query('msg_signature')",
}


def wecom_request(**changes: str) -> IncomingRequest:
    message = WECOM["message"]
    query = {name: message[name] for name in ("msg_signature", "timestamp", "nonce")}
    query.update(changes)
    return IncomingRequest.from_parts(
        WECOM_BODY, {"Content-Type": "text/xml"}, query, path=message["path"]
    )


def test_wecom_published_example_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECOM_TOKEN", WECOM["token"])
    scheme = build_auth(WECOM_AUTH)
    assert scheme.needs_body is True  # xml.Encrypt is in the decoded body
    request = wecom_request()
    body = decode_body(request, "xml")
    assert body["xml"]["Encrypt"] == WECOM["message"]["msg_encrypt"]
    asyncio.run(scheme.check(request, body, 0))
    # The published signature is SHA-1 of the documented sorted concatenation.
    concatenation = WECOM["message"]["sorted_concatenation"]
    expected = hashlib.sha1(concatenation.encode()).hexdigest()
    assert expected == WECOM["message"]["msg_signature"]


@pytest.mark.parametrize(
    "changes",
    [{"nonce": "1372623148"}, {"timestamp": "1409659814"}, {"msg_signature": "0" * 40}],
    ids=["nonce", "timestamp", "signature"],
)
def test_wecom_refuses_a_changed_query(
    monkeypatch: pytest.MonkeyPatch, changes: Dict[str, str]
) -> None:
    monkeypatch.setenv("WECOM_TOKEN", WECOM["token"])
    request = wecom_request(**changes)
    with pytest.raises(AuthFailed, match="signature does not match"):
        asyncio.run(build_auth(WECOM_AUTH).check(request, decode_body(request, "xml"), 0))


def test_wecom_refuses_a_missing_nonce_or_another_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECOM_TOKEN", WECOM["token"])
    request = IncomingRequest.from_parts(WECOM_BODY, {}, {"msg_signature": "x", "timestamp": "1"})
    with pytest.raises(AuthFailed, match="expected could not be evaluated"):  # sort([.., null])
        asyncio.run(build_auth(WECOM_AUTH).check(request, decode_body(request, "xml"), 0))
    monkeypatch.setenv("WECOM_TOKEN", "another")
    request = wecom_request()
    with pytest.raises(AuthFailed, match="signature does not match"):
        asyncio.run(build_auth(WECOM_AUTH).check(request, decode_body(request, "xml"), 0))


# --- Milliseconds, and the secret inside the signed string (DingTalk's robots) -----------------

DING_SECRET = "SEC-an-example-robot-secret"
DING = {
    "type": "expression",
    "expected": "hmac('sha256', env('DING_SECRET'), "
    "join(`\"\\n\"`, [header('timestamp'), env('DING_SECRET')]), 'base64')",
    "given": "header('sign')",
    "timestamp": {"value": "header('timestamp')", "format": "unix_ms", "tolerance": 3600},
}
DING_MS = "1765085629123"


def ding_sign(stamp: str) -> str:
    """base64(HMAC-SHA256(secret, timestamp + "\\n" + secret)), as DingTalk documents it."""
    signed = f"{stamp}\n{DING_SECRET}".encode()
    mac = hmac.new(DING_SECRET.encode(), signed, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def test_a_millisecond_timestamp_with_the_secret_in_the_signed_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DING_SECRET", DING_SECRET)
    scheme = build_auth(DING)
    headers = {"timestamp": DING_MS, "sign": ding_sign(DING_MS)}
    seconds = int(DING_MS) / 1000
    check(scheme, b"{}", headers, now=seconds + 3599)
    with pytest.raises(AuthFailed, match="outside the allowed 3600 s window"):
        check(scheme, b"{}", headers, now=seconds + 3601)
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(scheme, b"{}", {"timestamp": "1765085629124", "sign": headers["sign"]}, now=seconds)
    with pytest.raises(AuthFailed, match="no valid timestamp"):
        check(scheme, b"{}", {"timestamp": "1765085629.123", "sign": "x"}, now=seconds)


@pytest.mark.parametrize(
    "value, written, seconds",
    [
        ("1700000000", "unix", 1_700_000_000.0),
        (1700000000, "unix", 1_700_000_000.0),
        ("1700000000250", "unix_ms", 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", "rfc3339", 1_700_000_000.0),
        ("2023-11-14T23:13:20.25+01:00", "rfc3339", 1_700_000_000.25),
        ("2023-11-14t22:13:20z", "rfc3339", 1_700_000_000.0),
    ],
)
def test_timestamp_formats(value: Any, written: str, seconds: float) -> None:
    assert parse_time(value, written) == seconds


@pytest.mark.parametrize(
    "value, written",
    [("1e9", "unix"), (" 17", "unix"), ("inf", "unix"), (True, "unix"), (1.5, "unix"),
     (-1, "unix"), (None, "unix"), ("1" * 16, "unix_ms"), (1700000000, "rfc3339")],
)  # fmt: skip
def test_timestamps_not_in_their_format_are_refused(value: Any, written: str) -> None:
    with pytest.raises(AuthFailed, match="no valid timestamp"):
        parse_time(value, written)


# --- Before or after decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, needs_body",
    [
        ("header('X-Signature')", False),
        ("query('sig')", False),
        ("parse_json(raw_body()).signature", False),
        ("body().signature", True),
        ("signature", True),
        ("xml.Encrypt", True),
        ("@", True),
        ("[header('A')][0]", False),
        ("sort_by(`[]`, &name) | [0]", False),
    ],
)
def test_the_scheme_waits_for_the_body_only_when_it_reads_it(
    monkeypatch: pytest.MonkeyPatch, given: str, needs_body: bool
) -> None:
    monkeypatch.setenv("SECRET", SECRET)
    section = {"type": "expression", "expected": "sha256(env('SECRET'))", "given": given}
    assert build_auth(section).needs_body is needs_body


def channel(auth: Any, **extra: Any) -> Dict[str, Any]:
    return {"name": "signed", "request": {"sender": "s", "text": "t"}, "auth": auth, **extra}


def test_the_pipeline_checks_it_before_or_after_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", SECRET)
    monkeypatch.setenv("WECOM_TOKEN", WECOM["token"])
    early = check_channel(channel(STAMPED)).config
    late = check_channel(channel(WECOM_AUTH, request={"format": "xml", "sender": "s",
                                                      "text": "t"})).config  # fmt: skip
    assert early is not None and late is not None
    assert authenticate in Pipeline(early).stages
    assert authenticate_body not in Pipeline(early).stages
    assert authenticate_body in Pipeline(late).stages
    assert authenticate not in Pipeline(late).stages


# --- Findings ----------------------------------------------------------------------------------


def findings(auth: Any) -> List[Any]:
    config, found, _ = check_channel(channel(auth))
    assert config is None
    return [(finding.code, finding.path, finding.message) for finding in found]


def test_a_missing_expected_is_a_finding() -> None:
    assert findings({"type": "expression", "given": "header('X-Signature')"}) == [
        ("missing-key", "signed.auth.expected", "missing required key 'expected'")
    ]


def test_an_env_name_that_is_not_a_literal_is_a_finding() -> None:
    section = {
        "type": "expression",
        "expected": "hmac('sha256', env(header('X-Key')), raw_body(), 'hex')",
        "given": "header('X-Signature')",
    }
    [(code, path, message)] = findings(section)
    assert (code, path) == ("expression-invalid", "signed.auth.expected")
    assert "env() takes the variable's name as a literal: env('NAME')" in message


def test_an_unknown_timestamp_format_is_a_finding() -> None:
    section = dict(STAMPED, timestamp={"value": "header('X-Timestamp')", "format": "iso8601"})
    [(code, path, message)] = findings(section)
    assert (code, path) == ("invalid-value", "signed.auth.timestamp.format")
    assert "'iso8601' is not one of ['unix', 'unix_ms', 'rfc3339']" in message


def test_an_expected_signature_without_a_secret_is_a_finding() -> None:
    section = {"type": "expression", "expected": "sha256(raw_body())", "given": "header('X-S')"}
    [(code, path, _)] = findings(section)
    assert (code, path) == ("invalid-value", "signed.auth.expected")
    # A quoted 'env(' fools the loader's check of the text, not the scheme's.
    sly = build_auth(dict(section, expected="join('', ['env(', raw_body()])"))
    assert sly.problems() == ["expected reads no secret (env('NAME')): anyone could compute it"]


def test_a_missing_or_empty_secret_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SECRET", raising=False)
    config = check_channel(channel(STAMPED)).config
    assert config is not None and config.env_names() == ["SECRET"]
    assert environment_problems(config)[0][:2] == (
        "missing-env", "environment variable SECRET is not set"
    )  # fmt: skip
    monkeypatch.setenv("SECRET", "")
    config = check_channel(channel(STAMPED)).config
    assert config is not None
    assert [p[0] for p in environment_problems(config)] == ["empty-secret"]
