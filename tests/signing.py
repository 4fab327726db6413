"""Sign requests as the platforms do, with the test servers' secrets."""

import base64
import hashlib
import hmac
import time
from typing import Dict
from urllib.parse import parse_qsl

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# The same values as the shipped mappings' test cases use (their `env`).
WEBHOOK_SECRETS = {
    "TELEGRAM_SECRET_TOKEN": "telegram-secret-token",
    "SLACK_SIGNING_SECRET": "slack-signing-secret",
    "TWILIO_AUTH_TOKEN": "twilio-auth-token",
    "TWILIO_WEBHOOK_URL": "https://example.com/webhooks/twilio/webhook",
    "WHATSAPP_APP_SECRET": "whatsapp-app-secret",
    "MESSENGER_APP_SECRET": "messenger-app-secret",
    "MATTERMOST_TOKEN": "zmigewsanbbsdf59xnmduzypjc",
    "ROCKETCHAT_TOKEN": "<token>",
    "TEAMS_SECURITY_TOKEN": "vqF0En+Z0ucuRTM/01o2GuhMH3hKKk/N2bOmlM31zaA=",
    "LINE_CHANNEL_SECRET": "line-channel-secret",
    "VIBER_AUTH_TOKEN": "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9",
    "ZULIP_BOT_TOKEN": "xvOzfurIutdRRVLzpXrIIHXJvNfaJLJ0",
    "STANDARD_WEBHOOKS_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "CHATWOOT_WEBHOOK_TOKEN": "chatwoot-webhook-token",
}

# Standard Webhooks requests carry the test vector's message id, as the mapping's cases do.
STANDARD_WEBHOOKS_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"


def _hmac(secret: str, message: bytes, digest=hashlib.sha256) -> bytes:  # noqa: ANN001
    return hmac.new(secret.encode(), message, digest).digest()


def signature_headers(platform: str, body: bytes) -> Dict[str, str]:
    """The authentication headers ``platform`` would send with ``body`` now."""
    if platform == "telegram":
        return {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRETS["TELEGRAM_SECRET_TOKEN"]}
    if platform == "slack":
        stamp = str(int(time.time()))
        mac = _hmac(WEBHOOK_SECRETS["SLACK_SIGNING_SECRET"], f"v0:{stamp}:".encode() + body)
        return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + mac.hex()}
    if platform == "twilio":
        params = parse_qsl(body.decode(), keep_blank_values=True)
        signed = WEBHOOK_SECRETS["TWILIO_WEBHOOK_URL"] + "".join(k + v for k, v in sorted(params))
        mac = _hmac(WEBHOOK_SECRETS["TWILIO_AUTH_TOKEN"], signed.encode(), hashlib.sha1)
        return {"X-Twilio-Signature": base64.b64encode(mac).decode()}
    if platform in ("whatsapp", "messenger"):
        mac = _hmac(WEBHOOK_SECRETS[f"{platform.upper()}_APP_SECRET"], body)
        return {"X-Hub-Signature-256": "sha256=" + mac.hex()}
    if platform == "teams":
        key = base64.b64decode(WEBHOOK_SECRETS["TEAMS_SECURITY_TOKEN"])
        mac = hmac.new(key, body, hashlib.sha256).digest()
        return {"Authorization": "HMAC " + base64.b64encode(mac).decode()}
    if platform == "line":
        mac = _hmac(WEBHOOK_SECRETS["LINE_CHANNEL_SECRET"], body)
        return {"X-Line-Signature": base64.b64encode(mac).decode()}
    if platform == "viber":
        return {"X-Viber-Content-Signature": _hmac(WEBHOOK_SECRETS["VIBER_AUTH_TOKEN"], body).hex()}
    if platform == "standard-webhooks":
        stamp = str(int(time.time()))
        key = base64.b64decode(WEBHOOK_SECRETS["STANDARD_WEBHOOKS_SECRET"][len("whsec_") :])
        signed = f"{STANDARD_WEBHOOKS_ID}.{stamp}.".encode() + body
        mac = hmac.new(key, signed, hashlib.sha256).digest()
        return {
            "webhook-id": STANDARD_WEBHOOKS_ID,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
    return {}


# --- Ed25519, JWT and SHA-1 signers of the mappings added with Discord, Telnyx, Vonage, Webex
# and Google Chat. The key pairs are RFC 8032 section 7.1 TEST 1 (Discord) and TEST 2 (Telnyx)
# (tests/payloads/ed25519/), derived here from their published seeds, so the mappings' test cases
# and these helpers sign with the same keys.
import hashlib as _hashlib  # noqa: E402
import json as _json  # noqa: E402

import jwt as _jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa as _rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
from jwt.algorithms import RSAAlgorithm as _RSAAlgorithm  # noqa: E402

DISCORD_SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
TELNYX_SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
)


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


WEBHOOK_SECRETS.update(
    {
        "DISCORD_PUBLIC_KEY": _raw_public(DISCORD_SIGNING_KEY).hex(),
        "TELNYX_PUBLIC_KEY": base64.b64encode(_raw_public(TELNYX_SIGNING_KEY)).decode(),
        "VONAGE_SIGNATURE_SECRET": "vonage-test-signature-secret-0123456789",
        "WEBEX_WEBHOOK_SECRET": "webex-webhook-secret",
    }
)


def discord_headers(body: bytes, key: Ed25519PrivateKey = DISCORD_SIGNING_KEY) -> Dict[str, str]:
    """Discord's interaction headers: hex Ed25519 over timestamp + body."""
    stamp = str(int(time.time()))
    return {
        "X-Signature-Ed25519": key.sign(stamp.encode() + body).hex(),
        "X-Signature-Timestamp": stamp,
    }


def vonage_token(body: bytes, secret: str = "", **claims: object) -> str:
    """A Vonage signed-webhook JWT (HS256, the documented sample JWT's claims) for ``body``."""
    payload = {
        "iat": int(time.time()),
        "jti": "c5ba8f24-1a14-4c10-bfdf-3fbe8ce511b5",
        "iss": "Vonage",
        "payload_hash": _hashlib.sha256(body).hexdigest(),
        "api_key": "a1b2c3d",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        **claims,
    }
    return _jwt.encode(payload, secret or WEBHOOK_SECRETS["VONAGE_SIGNATURE_SECRET"], "HS256")


_documented_signature_headers = signature_headers


def signature_headers(platform: str, body: bytes) -> Dict[str, str]:  # noqa: F811
    """The authentication headers ``platform`` would send with ``body`` now."""
    if platform == "discord":
        return discord_headers(body)
    if platform == "telnyx":
        stamp = str(int(time.time()))
        signature = TELNYX_SIGNING_KEY.sign(stamp.encode() + b"|" + body)
        return {
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": stamp,
        }
    if platform == "vonage":
        return {"Authorization": "Bearer " + vonage_token(body)}
    if platform == "webex":
        mac = _hmac(WEBHOOK_SECRETS["WEBEX_WEBHOOK_SECRET"], body, hashlib.sha1)
        return {"X-Spark-Signature": mac.hex()}
    return _documented_signature_headers(platform, body)


# Google Chat-style tokens (RS256, issuer chat@system.gserviceaccount.com) signed with a key
# made for this test run; its public half is served as a JWK set by tests/conftest.py.
CHAT_ISSUER = "chat@system.gserviceaccount.com"
CHAT_PROJECT_NUMBER = "1234567890"
CHAT_KEY_ID = "test-chat-key"
CHAT_SIGNING_KEY = _rsa.generate_private_key(public_exponent=65537, key_size=2048)


def chat_jwks() -> Dict[str, object]:
    """The JWK set holding the public key of ``CHAT_SIGNING_KEY``."""
    jwk = _json.loads(_RSAAlgorithm.to_jwk(CHAT_SIGNING_KEY.public_key()))
    jwk.update({"kid": CHAT_KEY_ID, "alg": "RS256", "use": "sig"})
    return {"keys": [jwk]}


def chat_token(key: object = None, algorithm: str = "RS256", **claims: object) -> str:
    """A bearer token as Google Chat sends it (project-number audience), valid for an hour."""
    now = int(time.time())
    payload = {"iss": CHAT_ISSUER, "aud": CHAT_PROJECT_NUMBER, "iat": now, "exp": now + 3600}
    payload.update(claims)
    headers = {"kid": CHAT_KEY_ID} if algorithm != "none" else None
    signing_key = None if algorithm == "none" else (key or CHAT_SIGNING_KEY)
    return _jwt.encode(payload, signing_key, algorithm=algorithm, headers=headers)


# The channels of tests/test_protocols.py: their secrets, and the RSA key the platform signs
# with (its public half in the channel's environment).
RSASIGNED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PROTOCOL_SECRETS = {
    "TRANSACTIONS_TOKEN": "transactions-test-token",
    "WECHAT_TOKEN": "wechat-test-token",
    "STAMPED_SECRET": "stamped-test-secret",
    "MILLIS_APP_ID": "430756832",
    "MILLIS_SECRET": "millis-test-secret",
    "RSASIGNED_PUBLIC_KEY": RSASIGNED_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode(),
}
