"""The ``rsa`` scheme: SHA-256 signatures with PKCS#1 v1.5 or PSS padding, made here with
``cryptography`` and a key pair generated for the test."""

import asyncio
import base64
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from generic_connector.auth import AuthFailed, AuthScheme, build_auth
from generic_connector.config import check_channel, environment_problems
from generic_connector.errors import ConfigError
from generic_connector.request import IncomingRequest
from generic_connector.startup import load_startup_channel

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
BODY = b'{"event":"message","text":"hello"}'
PSS_DIGEST_SALT = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
PSS_MAX_SALT = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


def pem(key: Any) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def sign(data: bytes, scheme: padding.AsymmetricPadding, key: Any = KEY) -> str:
    return base64.b64encode(key.sign(data, scheme, hashes.SHA256())).decode()


def check(auth: AuthScheme, body: bytes, headers: Dict[str, str], now: float = 0.0) -> None:
    asyncio.run(auth.check(IncomingRequest.from_parts(body, headers), None, now))


def section(**keys: Any) -> Dict[str, Any]:
    return {"type": "rsa", "public_key_env": "PLATFORM_PUBLIC_KEY", "given": "header('X-Sig')",
            **keys}  # fmt: skip


@pytest.fixture
def public_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_PUBLIC_KEY", pem(KEY))


def test_pkcs1v15_signatures_over_the_raw_body(public_key: None) -> None:
    scheme = build_auth(section())
    assert scheme.needs_body is False and scheme.problems() == []
    check(scheme, BODY, {"X-Sig": sign(BODY, padding.PKCS1v15())})
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(scheme, BODY + b" ", {"X-Sig": sign(BODY, padding.PKCS1v15())})
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(scheme, BODY, {"X-Sig": sign(BODY, padding.PKCS1v15(), OTHER_KEY)})
    with pytest.raises(AuthFailed, match="signature does not match"):  # PSS is not accepted
        check(scheme, BODY, {"X-Sig": sign(BODY, PSS_DIGEST_SALT)})


@pytest.mark.parametrize("salt", [PSS_DIGEST_SALT, PSS_MAX_SALT], ids=["digest", "max"])
def test_pss_signatures_with_either_salt_length(
    public_key: None, salt: padding.AsymmetricPadding
) -> None:
    scheme = build_auth(section(padding="pss"))
    check(scheme, BODY, {"X-Sig": sign(BODY, salt)})
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(scheme, BODY + b"!", {"X-Sig": sign(BODY, salt)})
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(scheme, BODY, {"X-Sig": sign(BODY, padding.PKCS1v15())})


def test_a_flipped_bit_fails(public_key: None) -> None:
    scheme = build_auth(section())
    raw = bytearray(base64.b64decode(sign(BODY, padding.PKCS1v15())))
    raw[17] ^= 1
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(scheme, BODY, {"X-Sig": base64.b64encode(bytes(raw)).decode()})


@pytest.mark.parametrize(
    "headers, reason",
    [({}, "no signature"), ({"X-Sig": ""}, "no signature"), ({"X-Sig": "%%%"}, "not base64"),
     ({"X-Sig": "c2hvcnQ="}, "signature does not match")],
    ids=["missing", "empty", "not base64", "too short"],
)  # fmt: skip
def test_missing_and_malformed_signatures(
    public_key: None, headers: Dict[str, str], reason: str
) -> None:
    with pytest.raises(AuthFailed, match=reason):
        check(build_auth(section()), BODY, headers)


def test_a_signed_expression_a_prefix_hex_and_a_timestamp(public_key: None) -> None:
    scheme = build_auth(
        section(
            signed="join('.', [header('X-Timestamp'), raw_body()])",
            prefix="v1=",
            encoding="hex",
            timestamp={"value": "header('X-Timestamp')", "tolerance": 60},
        )
    )
    stamp = "1700000000"
    signed = f"{stamp}.".encode() + BODY
    signature = KEY.sign(signed, padding.PKCS1v15(), hashes.SHA256()).hex()
    headers = {"X-Timestamp": stamp, "X-Sig": f"v1={signature}"}
    check(scheme, BODY, headers, now=1_700_000_030)
    with pytest.raises(AuthFailed, match="window"):
        check(scheme, BODY, headers, now=1_700_000_061)
    with pytest.raises(AuthFailed, match="no signature starting with 'v1='"):
        check(scheme, BODY, dict(headers, **{"X-Sig": signature}), now=1_700_000_000)
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(scheme, BODY, dict(headers, **{"X-Timestamp": "1700000001"}), now=1_700_000_000)


def test_a_certificate_holds_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform")])
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(KEY, hashes.SHA256())
    )
    monkeypatch.setenv("PLATFORM_PUBLIC_KEY", certificate.public_bytes(Encoding.PEM).decode())
    check(build_auth(section()), BODY, {"X-Sig": sign(BODY, padding.PKCS1v15())})


# --- Key material found at start-up ------------------------------------------------------------

SECRET_LOOKING = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA-not-a-key"


def small_key_pem() -> str:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))


@pytest.mark.parametrize(
    "value, reason",
    [
        (SECRET_LOOKING, "is not a PEM public key or certificate"),
        (pem(KEY).replace("\n", "\\n"), "its line breaks are written \\n"),
        (pem(ec.generate_private_key(ec.SECP256R1())), "is a public key of another kind than RSA"),
        ("small", "is a 1024-bit key (at least 2048 bits)"),
    ],
    ids=["garbage", "escaped line breaks", "ec key", "1024 bits"],
)
def test_a_malformed_public_key_makes_the_scheme_unusable_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    if value == "small":
        value = small_key_pem()
    monkeypatch.setenv("PLATFORM_PUBLIC_KEY", value)
    scheme = build_auth(section())
    [problem] = scheme.problems()
    assert problem.startswith(
        "the value of environment variable PLATFORM_PUBLIC_KEY (a PEM RSA public key or "
        "certificate) "
    )
    assert reason in problem
    assert "MIIB" not in problem and "-not-a-key" not in problem
    with pytest.raises(AuthFailed, match="PLATFORM_PUBLIC_KEY"):
        check(scheme, BODY, {"X-Sig": sign(BODY, padding.PKCS1v15())})


CHANNEL = """\
name: signed
auth:
  type: rsa
  public_key_env: PLATFORM_PUBLIC_KEY
  padding: pss
  given: header('X-Signature')
request:
  sender: user.id
  text: text
"""


def test_a_malformed_public_key_is_a_start_up_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_PUBLIC_KEY", SECRET_LOOKING)
    config = check_channel(yaml.safe_load(CHANNEL)).config
    assert config is not None
    problems: List[Any] = environment_problems(config)
    assert [(code, hint) for code, _, hint in problems] == [
        ("invalid-secret", "fix the secret's value")
    ]
    assert "environment variable PLATFORM_PUBLIC_KEY" in problems[0][1]
    with pytest.raises(ConfigError) as raised:
        load_startup_channel(yaml.safe_load(CHANNEL), argv=[])
    assert "PLATFORM_PUBLIC_KEY" in str(raised.value)
    assert SECRET_LOOKING not in str(raised.value)
    monkeypatch.setenv("PLATFORM_PUBLIC_KEY", pem(KEY))
    assert check_channel(yaml.safe_load(CHANNEL), require_env=True).config is not None


def test_an_unset_public_key_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLATFORM_PUBLIC_KEY", raising=False)
    with pytest.raises(ConfigError, match="PLATFORM_PUBLIC_KEY is not set"):
        load_startup_channel(yaml.safe_load(CHANNEL), argv=[])


@pytest.mark.parametrize(
    "keys, path",
    [({"padding": "pkcs1"}, "signed.auth.padding"), ({"given": None}, "signed.auth.given"),
     ({"encoding": "base32"}, "signed.auth.encoding")],
)  # fmt: skip
def test_invalid_sections_are_findings(keys: Dict[str, Optional[str]], path: str) -> None:
    auth = {k: v for k, v in dict(section(), **keys).items() if v is not None}
    entry = {"name": "signed", "request": {"sender": "s", "text": "t"}, "auth": auth}
    config, found, _ = check_channel(entry)
    assert config is None and [f.path for f in found] == [path]
