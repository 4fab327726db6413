"""The ``ed25519`` scheme: RFC 8032's vectors, Standard Webhooks ``v1a``, Discord."""

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from generic_connector.auth import AuthFailed, build_auth
from generic_connector.request import IncomingRequest

PAYLOADS = Path(__file__).resolve().parent / "payloads"
RFC8032 = json.loads((PAYLOADS / "ed25519" / "rfc8032_7_1.json").read_text())["vectors"]
V1A = json.loads((PAYLOADS / "standard-webhooks" / "v1a_vector.json").read_text())
V1 = json.loads((PAYLOADS / "standard-webhooks" / "test_vector.json").read_text())
DISCORD_BODY = (PAYLOADS / "discord" / "application_command.json").read_bytes()


def check(auth: Dict[str, Any], body: bytes, headers: Dict[str, str], now: float = 0.0) -> None:
    request = IncomingRequest.from_parts(body, headers)
    asyncio.run(build_auth(auth).check(request, None, now))


# --- RFC 8032 section 7.1: the signature over the body alone --------------------------------

RAW = dict(type="ed25519", public_key_env="PUBLIC_KEY", header="X-Signature", signed="{body}")


@pytest.mark.parametrize("vector", RFC8032, ids=[v["name"] for v in RFC8032])
def test_rfc8032_vectors_verify(monkeypatch: pytest.MonkeyPatch, vector: Dict[str, str]) -> None:
    monkeypatch.setenv("PUBLIC_KEY", vector["public_key"])
    check(RAW, bytes.fromhex(vector["message"]), {"X-Signature": vector["signature"]})


@pytest.mark.parametrize("vector", RFC8032, ids=[v["name"] for v in RFC8032])
def test_rfc8032_vectors_with_base64_key_and_signature(
    monkeypatch: pytest.MonkeyPatch, vector: Dict[str, str]
) -> None:
    monkeypatch.setenv("PUBLIC_KEY", base64.b64encode(bytes.fromhex(vector["public_key"])).decode())
    signature = base64.b64encode(bytes.fromhex(vector["signature"])).decode()
    auth = dict(RAW, key_encoding="base64", encoding="base64")
    check(auth, bytes.fromhex(vector["message"]), {"X-Signature": signature})


@pytest.mark.parametrize("vector", RFC8032, ids=[v["name"] for v in RFC8032])
def test_rfc8032_vectors_fail_when_anything_changes(
    monkeypatch: pytest.MonkeyPatch, vector: Dict[str, str]
) -> None:
    monkeypatch.setenv("PUBLIC_KEY", vector["public_key"])
    message = bytes.fromhex(vector["message"])
    signature = bytearray.fromhex(vector["signature"])
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(RAW, message + b"\x00", {"X-Signature": vector["signature"]})
    signature[5] ^= 1
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(RAW, message, {"X-Signature": signature.hex()})
    other = next(v for v in RFC8032 if v is not vector)
    monkeypatch.setenv("PUBLIC_KEY", other["public_key"])
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(RAW, message, {"X-Signature": vector["signature"]})


# --- Standard Webhooks v1a -------------------------------------------------------------------

STANDARD_V1A = dict(
    type="ed25519", public_key_env="WEBHOOK_PUBLIC_KEY", key_encoding="whpk",
    header="webhook-signature", prefix="v1a,", separator=" ", encoding="base64",
    signed="{id}.{timestamp}.{body}", id_header="webhook-id",
    timestamp_header="webhook-timestamp", max_age=300,
)  # fmt: skip
STANDARD_V1 = dict(
    type="hmac", secret_env="WEBHOOK_SECRET", secret_encoding="whsec", header="webhook-signature",
    prefix="v1,", separator=" ", encoding="base64", signed="{id}.{timestamp}.{body}",
    id_header="webhook-id", timestamp_header="webhook-timestamp",
)  # fmt: skip
V1A_NOW = V1A["timestamp"] + 10


@pytest.fixture
def standard_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_PUBLIC_KEY", V1A["public_key"])
    monkeypatch.setenv("WEBHOOK_SECRET", V1["secret"])


def v1a_check(auth: Any = None, body: Optional[str] = None, now: float = V1A_NOW, **headers: str):  # noqa: ANN201
    payload = (V1A["payload"] if body is None else body).encode()
    check(auth or STANDARD_V1A, payload, {**V1A["headers"], **headers}, now)


def test_standard_webhooks_v1a_vector_verifies(standard_keys: None) -> None:
    v1a_check()
    v1a_check(**{"webhook-signature": V1A["expected_signature"]})


def test_the_v1a_vector_is_signed_over_the_documented_content(standard_keys: None) -> None:
    # The stored signature really is Ed25519 over msg_id.timestamp.payload with the key pair.
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(V1A["secret_key_seed_hex"]))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert V1A["public_key"] == "whpk_" + base64.b64encode(public).decode()
    content = f"{V1A['msg_id']}.{V1A['timestamp']}.{V1A['payload']}"
    assert V1A["signed_content"] == content
    signature = base64.b64encode(key.sign(content.encode())).decode()
    assert V1A["expected_signature"] == "v1a," + signature


def test_one_header_serves_the_symmetric_and_the_asymmetric_scheme(standard_keys: None) -> None:
    v1a_check(STANDARD_V1)
    v1a_check([STANDARD_V1A, STANDARD_V1])
    # Only the v1 signature: the v1a scheme alone refuses, the list accepts.
    only_v1 = {"webhook-signature": V1["expected_signature"]}
    with pytest.raises(AuthFailed, match="no signature starting with 'v1a,'"):
        v1a_check(**only_v1)
    v1a_check([STANDARD_V1A, STANDARD_V1], **only_v1)


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(body='{"test": 2432232315}'), "signature does not match"),
        (dict(**{"webhook-id": "msg_other"}), "signature does not match"),
        (dict(**{"webhook-timestamp": str(V1A["timestamp"] + 1)}), "signature does not match"),
        (dict(now=V1A["timestamp"] + 301), "timestamp outside the allowed 300 s window"),
        (dict(now=V1A["timestamp"] - 301), "timestamp outside the allowed 300 s window"),
        (dict(**{"webhook-timestamp": "NaN"}), "no valid webhook-timestamp header"),
        (dict(**{"webhook-id": ""}), "no webhook-id header"),
        (dict(**{"webhook-signature": "v1a,bm9wZQ== v1a,%%%"}), "signature does not match"),
    ],
    ids=["body", "id", "timestamp", "late", "early", "NaN timestamp", "no id", "garbage"],
)
def test_standard_webhooks_v1a_refuses(
    standard_keys: None, change: Dict[str, Any], reason: str
) -> None:
    with pytest.raises(AuthFailed, match=reason):
        v1a_check(**change)


def test_a_whpk_key_without_its_prefix_is_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_PUBLIC_KEY", V1A["public_key"][len("whpk_") :])
    v1a_check()


# --- Discord: a key pair made here -------------------------------------------------------------

DISCORD = dict(
    type="ed25519", public_key_env="DISCORD_PUBLIC_KEY", header="X-Signature-Ed25519",
    timestamp_header="X-Signature-Timestamp", signed="{timestamp}{body}",
)  # fmt: skip
DISCORD_TIME = 1_700_000_000


@pytest.fixture
def discord_key(monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", public.hex())
    return key


def discord_headers(key: Ed25519PrivateKey, body: bytes, stamp: str) -> Dict[str, str]:
    signature = key.sign(stamp.encode() + body).hex()
    return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stamp}


def test_discord_interaction_verifies(discord_key: Ed25519PrivateKey) -> None:
    headers = discord_headers(discord_key, DISCORD_BODY, str(DISCORD_TIME))
    check(DISCORD, DISCORD_BODY, headers, DISCORD_TIME + 2)


def test_discord_refuses_a_changed_body_or_timestamp(discord_key: Ed25519PrivateKey) -> None:
    headers = discord_headers(discord_key, DISCORD_BODY, str(DISCORD_TIME))
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(DISCORD, DISCORD_BODY.replace(b"Mason", b"Nosam"), headers, DISCORD_TIME)
    moved = {**headers, "X-Signature-Timestamp": str(DISCORD_TIME + 1)}
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(DISCORD, DISCORD_BODY, moved, DISCORD_TIME)
    with pytest.raises(AuthFailed, match="no X-Signature-Ed25519 header"):
        check(DISCORD, DISCORD_BODY, {"X-Signature-Timestamp": str(DISCORD_TIME)}, DISCORD_TIME)


@pytest.mark.parametrize("stamp", ["NaN", "inf", "1e3", "", "1700000000.0", " 1700000000"])
def test_discord_refuses_timestamps_that_are_not_whole_seconds(
    discord_key: Ed25519PrivateKey, stamp: str
) -> None:
    # Signed correctly: only the timestamp's form is wrong.
    headers = discord_headers(discord_key, DISCORD_BODY, stamp)
    with pytest.raises(AuthFailed, match="no valid X-Signature-Timestamp header"):
        check(DISCORD, DISCORD_BODY, headers, DISCORD_TIME)


def test_discord_signature_is_over_the_raw_bytes(discord_key: Ed25519PrivateKey) -> None:
    body = b'{"type": 1, "note": "\xff"}'  # not UTF-8
    headers = discord_headers(discord_key, body, str(DISCORD_TIME))
    check(DISCORD, body, headers, DISCORD_TIME)
    with pytest.raises(AuthFailed, match="signature does not match"):
        check(DISCORD, body.replace(b"\xff", b"\xfe"), headers, DISCORD_TIME)


@pytest.mark.parametrize(
    "value, encoding",
    [("", "hex"), ("zz" * 32, "hex"), ("ab" * 31, "hex"), ("not base64!", "base64")],
    ids=["empty", "not hex", "31 bytes", "not base64"],
)
def test_an_unusable_public_key_refuses_every_request(
    monkeypatch: pytest.MonkeyPatch, value: str, encoding: str
) -> None:
    monkeypatch.setenv("DISCORD_PUBLIC_KEY", value)
    scheme = build_auth(dict(DISCORD, key_encoding=encoding))
    assert scheme.env_names() == ["DISCORD_PUBLIC_KEY"]
    assert scheme.problems()
    request = IncomingRequest.from_parts(DISCORD_BODY, {"X-Signature-Ed25519": "00" * 64})
    with pytest.raises(AuthFailed, match="DISCORD_PUBLIC_KEY"):
        asyncio.run(scheme.check(request, None, DISCORD_TIME))
