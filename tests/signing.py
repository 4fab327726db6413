"""Sign requests as the platforms do, with the test servers' secrets."""

import base64
import hashlib
import hmac
import time
from typing import Dict
from urllib.parse import parse_qsl

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
