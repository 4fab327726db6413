"""Platform features end to end, through the real ``rasa run`` serving the shipped mappings.

- Discord: an Ed25519-signed PING is answered PONG by the handshake (after auth), and a bad
  signature is refused with 401, as Discord checks before it accepts an endpoint URL.
- JWT: the Google Chat mapping with its keys from a local JWK set server (``google-chat-jwks`` in
  tests/conftest.py) accepts a valid RS256 token and refuses expired, wrong-audience, wrong-issuer,
  foreign-key and unsigned ones.
- LINE: all the bot messages answering one event go to the stand-in API as ONE reply request
  with the event's reply token; a message Rasa sends on its own goes through the push API.
"""

import copy
import json
import time
from typing import Any, Dict, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import JsonDocuments
from tests.platform_api import PlatformAPI
from tests.rasa_process import ROOT, RasaServer, user_events
from tests.signing import DISCORD_SIGNING_KEY, chat_token, discord_headers, signature_headers

pytestmark = pytest.mark.e2e

GREETING = "Hello! I am the generic connector demo."
JSON = {"Content-Type": "application/json"}


def payload(path: str) -> Any:
    return json.loads((ROOT / "tests/payloads" / path).read_text())


# --- Discord --------------------------------------------------------------------------------

DISCORD = "/webhooks/discord/webhook"
PING = b'{"type": 1}'  # "a PING payload with a type: 1" (interactions/overview)


def test_discord_ping_is_answered_pong(platforms_rasa: RasaServer) -> None:
    status, headers, body = platforms_rasa.send(DISCORD, PING, {**JSON, **discord_headers(PING)})
    assert status == 200, body
    assert json.loads(body) == {"type": 1}
    # "You must provide a valid Content-Type when responding to PINGs."
    assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"


def _now() -> str:
    return str(int(time.time()))


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda: discord_headers(b'{"type": 2}'), id="signature of another body"),
        pytest.param(lambda: discord_headers(PING, Ed25519PrivateKey.generate()), id="another key"),
        pytest.param(lambda: {"X-Signature-Timestamp": _now()}, id="no signature"),
        pytest.param(
            lambda: {"X-Signature-Ed25519": "00" * 64, "X-Signature-Timestamp": _now()},
            id="zero signature",
        ),
        pytest.param(
            lambda: {**discord_headers(PING), "X-Signature-Timestamp": str(int(_now()) + 1)},
            id="another timestamp",
        ),
    ],
)
def test_discord_ping_with_a_bad_signature_is_refused(
    platforms_rasa: RasaServer, make_headers: Any
) -> None:
    status, _, body = platforms_rasa.send(DISCORD, PING, {**JSON, **make_headers()})
    assert status == 401
    assert json.loads(body) == {"error": "unauthorized"}
    assert b'"type"' not in body


def test_discord_stale_signature_is_refused(platforms_rasa: RasaServer) -> None:
    stamp = str(int(time.time()) - 3600)  # signed an hour ago: a replay
    signature = DISCORD_SIGNING_KEY.sign(stamp.encode() + PING).hex()
    headers = {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stamp}
    assert platforms_rasa.send(DISCORD, PING, {**JSON, **headers})[0] == 401


def test_discord_button_press_is_answered_with_the_assistants_reply(
    platforms_rasa: RasaServer,
) -> None:
    # The documented component interaction, its button's custom_id being an intent payload.
    interaction = payload("discord/message_component.json")
    interaction["id"] = "846462639134605399"
    interaction["data"]["custom_id"] = "/greet"
    raw = json.dumps(interaction).encode()
    status, _, body = platforms_rasa.send(DISCORD, raw, {**JSON, **discord_headers(raw)})
    assert status == 200, body
    assert json.loads(body) == {
        "type": 4,
        "data": {"content": GREETING, "embeds": [], "components": []},
    }
    [user] = [e for e in user_events(platforms_rasa.tracker("53908232506183680"))
              if e["message_id"] == "846462639134605399"]  # fmt: skip
    assert (user["text"], user["input_channel"]) == ("/greet", "discord")


# --- A JWT-protected channel with keys from a local JWK set server ---------------------------

CHAT = "/webhooks/google-chat-jwks/webhook"
CHAT_USER = "users/110196301251425681004"


def chat_event(message_id: str, text: str = "/greet") -> bytes:
    """Google's sample MESSAGE event (tests/payloads/google-chat), with its own message id."""
    event = payload("google-chat/message.json")
    event["message"].update({"name": f"spaces/-oMssgAAAAE/messages/{message_id}", "text": text,
                             "argumentText": text})  # fmt: skip
    return json.dumps(event).encode()


def send_chat(rasa: RasaServer, raw: bytes, token: str) -> Tuple[int, Dict[str, str], bytes]:
    return rasa.send(CHAT, raw, {**JSON, "Authorization": f"Bearer {token}"})


def chat_message_ids(rasa: RasaServer) -> list:
    return [e["message_id"] for e in user_events(rasa.tracker(CHAT_USER))]


def test_jwt_channel_accepts_a_valid_token(
    platforms_rasa: RasaServer, jwks_server: JsonDocuments
) -> None:
    message_id = "valid.valid"
    status, _, body = send_chat(platforms_rasa, chat_event(message_id), chat_token())
    assert status == 200, body
    assert json.loads(body) == {"text": GREETING}
    assert f"spaces/-oMssgAAAAE/messages/{message_id}" in chat_message_ids(platforms_rasa)
    assert "/jwks" in jwks_server.hits  # the keys came from the key server


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda: chat_token(exp=int(time.time()) - 60, iat=int(time.time()) - 3660),
                     id="expired"),
        pytest.param(lambda: chat_token(aud="999999999999"), id="wrong audience"),
        pytest.param(lambda: chat_token(iss="someone@example.com"), id="wrong issuer"),
        pytest.param(lambda: chat_token(key=_other_key()), id="signed with another key"),
        pytest.param(lambda: chat_token(algorithm="none"), id="unsigned (alg none)"),
        pytest.param(lambda: chat_token()[:-4] + "AAAA", id="signature altered"),
    ],
)  # fmt: skip
def test_jwt_channel_refuses_bad_tokens(
    platforms_rasa: RasaServer, jwks_server: JsonDocuments, make_token: Any, request: Any
) -> None:
    message_id = "refused." + request.node.callspec.id.replace(" ", "-")
    status, _, body = send_chat(platforms_rasa, chat_event(message_id), make_token())
    assert status == 401
    assert json.loads(body) == {"error": "unauthorized"}
    assert f"spaces/-oMssgAAAAE/messages/{message_id}" not in chat_message_ids(platforms_rasa)


def test_jwt_channel_refuses_a_request_without_token(platforms_rasa: RasaServer) -> None:
    status, _, body = platforms_rasa.send(CHAT, chat_event("no.token"), JSON)
    assert (status, json.loads(body)) == (401, {"error": "unauthorized"})


# --- LINE: one reply request per turn ---------------------------------------------------------

LINE = "/webhooks/line/webhook"


def line_text_event(text: str, event_id: str, reply_token: str) -> bytes:
    """The documented group text message (mappings/line.yml's first case), with its own ids."""
    document = {"destination": "xxxxxxxxxx", "events": [copy.deepcopy(LINE_EVENT)]}
    event = document["events"][0]
    event.update({"webhookEventId": event_id, "replyToken": reply_token})
    event["message"].update({"text": text, "id": event_id})
    event["message"].pop("emojis")
    event["message"].pop("mention")
    return json.dumps(document).encode()


def _first_line_event() -> Dict[str, Any]:
    import yaml  # the mapping's own documented example

    document = yaml.safe_load((ROOT / "mappings/line.yml").read_text())
    return document["tests"][0]["body"]["events"][0]


LINE_EVENT = _first_line_event()


def quick_reply(title: str, payload: str) -> Dict[str, Any]:
    action = {"type": "postback", "label": title, "data": payload, "displayText": title}
    return {"type": "action", "action": action}


def test_line_turn_is_one_reply_request(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    # The demo's menu intent answers with three messages: intro, buttons, outro.
    raw = line_text_event("/menu", "01LINETURNTEST000000000001", "turn-reply-token-1")
    status, _, body = platforms_rasa.send(LINE, raw, {**JSON, **signature_headers("line", raw)})
    assert status == 200, body

    def this_turn(r: Any) -> bool:
        return (r.json or {}).get("replyToken") == "turn-reply-token-1"

    assert platform_api.received(this_turn, 1)
    time.sleep(1.0)  # a second request for the same turn would have arrived by now
    replies = platform_api.received(this_turn, 1)
    assert len(replies) == 1, [r.json for r in replies]
    [reply] = replies
    assert (reply.method, reply.path) == ("POST", "/line/v2/bot/message/reply")
    assert reply.headers["Authorization"] == "Bearer line-test-token"
    assert reply.json == {
        "replyToken": "turn-reply-token-1",
        "messages": [
            {"type": "text", "text": "Here is what I can do."},
            {
                "type": "text",
                "text": "Pick one:",
                "quickReply": {
                    "items": [
                        quick_reply("Say hello", "/greet"),
                        quick_reply("Say goodbye", "/goodbye"),
                    ]
                },
            },
            {"type": "text", "text": "Or just type a message."},
        ],
    }
    pushes = platform_api.received(
        lambda r: r.path == "/line/v2/bot/message/push" and "Here is what I can do." in str(r.json),
        0,
        timeout=0,
    )
    assert pushes == []


def test_line_message_without_reply_token_is_pushed(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    # Rasa sending on its own (trigger_intent): no event, so no reply token: the push API.
    status, _, body = platforms_rasa.post(
        "/conversations/U-line-push-test/trigger_intent?output_channel=line", {"name": "greet"}
    )
    assert status == 200, body
    [push] = platform_api.received(
        lambda r: (
            r.path == "/line/v2/bot/message/push" and (r.json or {}).get("to") == "U-line-push-test"
        ),
        1,
    )
    assert push.json == {"to": "U-line-push-test", "messages": [{"type": "text", "text": GREETING}]}
