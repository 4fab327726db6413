"""Platforms' own protocols end to end, through the real ``rasa run`` serving the channels of
``PLATFORM_CREDENTIALS`` (tests/conftest.py): routes with path parameters and the channel's
JSON answers for a path or a method it does not serve."""

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.platform_api import PlatformAPI, Recorded
from tests.rasa_process import RasaServer, user_events
from tests.signing import PROTOCOL_SECRETS, RSASIGNED_KEY

pytestmark = pytest.mark.e2e

GREETING = "Hello! I am the generic connector demo."
JSON = {"Content-Type": "application/json"}
SIGNED = {**JSON, "Authorization": f"Bearer {PROTOCOL_SECRETS['TRANSACTIONS_TOKEN']}"}
PREFIX = "/webhooks/transactions"


def transaction(sender: str, text: str, event_id: str) -> bytes:
    event: Dict[str, Any] = {"event_id": event_id, "sender": sender, "content": {"body": text}}
    return json.dumps({"events": [event]}).encode()


def test_a_put_route_carries_messages_with_its_path_parameter(platforms_rasa: RasaServer) -> None:
    body = transaction("route-user-1", "hi", "ev-1")
    status, _, answer = platforms_rasa.send(
        f"{PREFIX}/transactions/txn-17", body, SIGNED, method="PUT"
    )
    assert (status, json.loads(answer)) == (200, {"replies": [GREETING]})
    [user] = user_events(platforms_rasa.tracker("route-user-1"))
    assert user["text"] == "hi"
    assert user["metadata"]["txn"] == "txn-17"  # Rasa adds its model and assistant ids


@pytest.mark.parametrize(
    "method, path, status, allow, error",
    [
        ("POST", "/transactions/t18", 405, "PUT", "POST is not served here; this path takes PUT"),
        ("DELETE", "/webhook", 405, "POST", "DELETE is not served here; this path takes POST"),
        ("POST", "/", 405, "GET", "POST is not served here; this path takes GET"),
        ("GET", "/nowhere/else", 404, None,
         "this channel serves no path /webhooks/transactions/nowhere/else"),
    ],
)  # fmt: skip
def test_a_path_or_method_the_channel_does_not_serve_gets_its_json_error(
    platforms_rasa: RasaServer,
    method: str,
    path: str,
    status: int,
    allow: str,
    error: str,
) -> None:
    body = transaction("route-user-2", "hi", "ev-2") if method != "GET" else None
    answered, headers, answer = platforms_rasa.send(PREFIX + path, body, SIGNED, method=method)
    lowered = {name.lower(): value for name, value in headers.items()}
    assert answered == status
    assert lowered.get("content-type") == "application/json"
    assert json.loads(answer) == {"error": error}
    assert lowered.get("allow") == allow


@pytest.mark.parametrize("headers", [JSON, {**JSON, "Authorization": "Bearer wrong-token"}])
def test_a_request_without_the_token_gets_the_platforms_own_403(
    platforms_rasa: RasaServer, headers: Dict[str, str]
) -> None:
    body = transaction("route-user-3", "hi", "ev-3")
    status, _, answer = platforms_rasa.send(
        f"{PREFIX}/transactions/txn-19", body, headers, method="PUT"
    )
    assert (status, json.loads(answer)) == (403, {"errcode": "M_FORBIDDEN", "error": "bad token"})
    assert not user_events(platforms_rasa.tracker("route-user-3"))  # nothing reached Rasa


# --- Signatures as expressions --------------------------------------------------------------

XML = {"Content-Type": "text/xml"}


def wechat_query(timestamp: int, nonce: str, token: str = PROTOCOL_SECRETS["WECHAT_TOKEN"]) -> str:
    """WeChat's plaintext-mode signature: SHA-1 of the sorted token, timestamp and nonce."""
    signed = "".join(sorted([token, str(timestamp), nonce]))
    signature = hashlib.sha1(signed.encode()).hexdigest()
    return f"signature={signature}&timestamp={timestamp}&nonce={nonce}"


WECHAT_MESSAGE = (
    b"<xml><ToUserName><![CDATA[gh_account]]></ToUserName>"
    b"<FromUserName><![CDATA[wechat-user-1]]></FromUserName><CreateTime>1348831860</CreateTime>"
    b"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content>"
    b"<MsgId>1234567890123456</MsgId></xml>"
)


def test_an_xml_webhook_signed_over_sorted_query_values_is_answered_in_xml(
    platforms_rasa: RasaServer,
) -> None:
    query = wechat_query(int(time.time()), "n0nce")
    status, headers, answer = platforms_rasa.send(
        f"/webhooks/wechat/webhook?{query}", WECHAT_MESSAGE, XML
    )
    assert status == 200, answer
    assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/xml"
    assert answer.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?><xml><ToUserName>wechat-user-1</ToUserName>'
        f"<FromUserName>gh_account</FromUserName><MsgType>text</MsgType><Content>{GREETING}"
        "</Content></xml>"
    )


@pytest.mark.parametrize(
    "query",
    [
        wechat_query(int(time.time()), "n0nce", token="not-the-token"),  # wrong token
        wechat_query(int(time.time()) - 3600, "n0nce"),  # an hour old: replayed
        "timestamp=1&nonce=x",  # no signature
    ],
)
def test_a_wrongly_signed_xml_webhook_gets_the_platforms_refusal(
    platforms_rasa: RasaServer, query: str
) -> None:
    status, _, answer = platforms_rasa.send(
        f"/webhooks/wechat/webhook?{query}", WECHAT_MESSAGE, XML
    )
    assert (status, answer) == (403, b"invalid signature")


def stamped(
    body: bytes, at: datetime, secret: str = PROTOCOL_SECRETS["STAMPED_SECRET"]
) -> Dict[str, str]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {**JSON, "X-Timestamp": stamp, "X-Signature": f"v1={mac}"}


def test_an_hmac_over_an_rfc3339_timestamp_header_is_checked(platforms_rasa: RasaServer) -> None:
    body = json.dumps({"event": "message", "payload": {"user": "stamped-1", "text": "hi"}}).encode()
    now = datetime.now(timezone.utc)
    assert platforms_rasa.send("/webhooks/stamped/webhook", body, stamped(body, now))[0] == 200
    late = stamped(body, now - timedelta(minutes=10))
    wrong = stamped(body, now, secret="another-secret")
    assert platforms_rasa.send("/webhooks/stamped/webhook", body, late)[0] == 401
    assert platforms_rasa.send("/webhooks/stamped/webhook", body, wrong)[0] == 401
    assert [e["text"] for e in user_events(platforms_rasa.tracker("stamped-1"))] == ["hi"]


def test_a_handshake_is_answered_with_the_hmac_of_its_challenge(
    platforms_rasa: RasaServer,
) -> None:
    # Zoom's endpoint validation: the answer's encryptedToken is the hex HMAC-SHA256 of
    # plainToken with the secret token.
    body = json.dumps(
        {"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}}
    ).encode()
    status, _, answer = platforms_rasa.send(
        "/webhooks/stamped/webhook", body, stamped(body, datetime.now(timezone.utc))
    )
    expected = hmac.new(
        PROTOCOL_SECRETS["STAMPED_SECRET"].encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256
    ).hexdigest()
    assert (status, json.loads(answer)) == (
        200,
        {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected},
    )


def millis(
    body: bytes, at_ms: int, secret: str = PROTOCOL_SECRETS["MILLIS_SECRET"]
) -> Dict[str, str]:
    signed = PROTOCOL_SECRETS["MILLIS_APP_ID"] + body.decode() + str(at_ms) + secret
    mac = hashlib.sha256(signed.encode()).hexdigest()
    return {**JSON, "X-Timestamp": str(at_ms), "X-Event-Signature": f"mac={mac}"}


def test_a_millisecond_timestamp_with_the_secret_in_the_signed_string(
    platforms_rasa: RasaServer,
) -> None:
    body = json.dumps({"sender": {"id": "millis-1"}, "message": {"text": "hi"}}).encode()
    now_ms = int(time.time() * 1000)
    assert platforms_rasa.send("/webhooks/millis/webhook", body, millis(body, now_ms))[0] == 200
    old = millis(body, now_ms - 3_600_000)
    wrong = millis(body, now_ms, secret="guessed")
    assert platforms_rasa.send("/webhooks/millis/webhook", body, old)[0] == 401
    assert platforms_rasa.send("/webhooks/millis/webhook", body, wrong)[0] == 401


def test_an_rsa_signed_webhook_is_checked_with_the_public_key(platforms_rasa: RasaServer) -> None:
    body = json.dumps({"from": "rsa-1", "text": "hi"}).encode()
    signature = RSASIGNED_KEY.sign(body, padding.PKCS1v15(), hashes.SHA256())
    headers = {**JSON, "X-Signature": base64.b64encode(signature).decode()}
    assert platforms_rasa.send("/webhooks/rsasigned/webhook", body, headers)[0] == 200
    tampered = body.replace(b"hi", b"ho")
    assert platforms_rasa.send("/webhooks/rsasigned/webhook", tampered, headers)[0] == 401
    assert [e["text"] for e in user_events(platforms_rasa.tracker("rsa-1"))] == ["hi"]


# --- Chained calls ----------------------------------------------------------------------------


def test_an_image_is_uploaded_then_sent_with_the_upload_id(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    """The demo's greeting on this channel is a text with an image (its ``uploader``
    variation): the text goes out alone; the image is uploaded, then sent with its id."""
    platform_api.plan(
        lambda r: r.path == "/uploader/media", [(200, {}, {"id": "media-31", "size": 2048})] * 2
    )
    platform_api.plan(
        lambda r: r.path == "/uploader/messages" and "media_id" in (r.json or {}),
        [(200, {}, {"is_sent": False, "reason": "busy"}), (200, {}, {"is_sent": True})],
    )
    body = json.dumps({"from": "chain-user-1", "text": "hello", "id": "chain-1"}).encode()
    status, _, answer = platforms_rasa.send("/webhooks/uploader/webhook", body, JSON)
    assert (status, json.loads(answer)) == (200, {})

    def this_user(request: Recorded) -> bool:
        if not request.path.startswith("/uploader/"):
            return False
        return request.path == "/uploader/media" or request.json.get("to") == "chain-user-1"

    platform_api.received(lambda r: this_user(r) and r.json.get("media_id"), 2)
    seen = [(r.path, r.json, r.status) for r in platform_api.requests if this_user(r)]
    upload = ("/uploader/media", {"url": "https://example.com/demo/hello.png"}, 200)
    sent = ("/uploader/messages", {"to": "chain-user-1", "media_id": "media-31"}, 200)
    assert seen == [
        ("/uploader/messages", {"to": "chain-user-1", "text": "Hello with a picture."}, 200),
        upload,
        sent,  # answered is_sent: false: the chain is tried again from its upload
        upload,
        sent,  # is_sent: true
    ]
