"""Replies through the platforms' APIs: a real ``rasa run`` calling a real local API server."""

import copy
import json
import time
from typing import Any, Dict

import pytest

from tests.conftest import API_TOKENS
from tests.platform_api import PlatformAPI, json_field
from tests.rasa_process import ROOT, RasaServer
from tests.signing import signature_headers


def post_signed(rasa: RasaServer, platform: str, body: Dict[str, Any]) -> tuple:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **signature_headers(platform, raw)}
    return rasa.send(f"/webhooks/{platform}/webhook", raw, headers)


pytestmark = pytest.mark.e2e

TOKEN = API_TOKENS["TELEGRAM_BOT_TOKEN"]
SEND_MESSAGE = f"/telegram/bot{TOKEN}/sendMessage"
GREETING = "Hello! I am the generic connector demo."
MENU = ["Here is what I can do.", "Pick one:", "Or just type a message."]


def payload(platform: str, name: str) -> Dict[str, Any]:
    return json.loads((ROOT / "tests/payloads" / platform / name).read_text())


def telegram_update(chat_id: int, text: str) -> Dict[str, Any]:
    """The documented text message update, from another chat."""
    update = copy.deepcopy(payload("telegram", "message.json"))
    update["message"]["chat"]["id"] = update["message"]["from"]["id"] = chat_id
    update["message"]["text"] = text
    return update


def to_chat(chat_id: int):  # noqa: ANN201
    return lambda r: r.path == SEND_MESSAGE and r.json["chat_id"] == str(chat_id)


def delivered(requests: list) -> list:
    return [r.json["text"] for r in requests if r.status == 200]


def test_telegram_update_is_answered_through_send_message(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    status, _, body = post_signed(platforms_rasa, "telegram", telegram_update(501, "hi"))
    assert (status, json.loads(body)) == (200, {})
    [call] = platform_api.received(to_chat(501), 1)
    assert call.method == "POST"
    assert call.headers["Content-Type"] == "application/json"
    assert call.json == {"chat_id": "501", "text": GREETING}


def test_telegram_buttons_become_an_inline_keyboard_in_order(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    post_signed(platforms_rasa, "telegram", telegram_update(502, "menu"))
    calls = platform_api.received(to_chat(502), 3)
    assert delivered(calls) == MENU
    assert calls[1].json["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Say hello", "callback_data": "/greet"}],
            [{"text": "Say goodbye", "callback_data": "/goodbye"}],
        ]
    }


def slack_button(title: str, value: str) -> Dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": title}, "value": value}


def test_slack_event_is_answered_with_chat_post_message(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    event = copy.deepcopy(payload("slack", "message.json"))
    event["event"].update({"user": "U0OUTBOUND", "text": "menu", "channel": "C0OUTBOUND"})
    event["event_id"] = "Ev0OUTBOUND"
    status, _, _ = post_signed(platforms_rasa, "slack", event)
    assert status == 200
    calls = platform_api.received(json_field("channel", "C0OUTBOUND"), 3)
    assert [c.path for c in calls] == ["/slack/chat.postMessage"] * 3
    assert {c.headers["Authorization"] for c in calls} == {"Bearer xoxb-slack-test-token"}
    assert delivered(calls) == MENU
    assert calls[1].json["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Pick one:"}},
        {
            "type": "actions",
            "elements": [
                slack_button("Say hello", "/greet"),
                slack_button("Say goodbye", "/goodbye"),
            ],
        },
    ]
    assert "thread_ts" not in calls[0].json  # null members are left out


def test_whatsapp_and_messenger_reply_through_their_send_apis(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    whatsapp = payload("whatsapp", "text_message.json")
    whatsapp["entry"][0]["changes"][0]["value"]["messages"][0].update(
        {"from": "16505559999", "id": "wamid.outbound", "text": {"body": "hello"}}
    )
    post_signed(platforms_rasa, "whatsapp", whatsapp)
    [call] = platform_api.received(json_field("to", "16505559999"), 1)
    assert call.path == "/whatsapp/106540352242922/messages"
    assert call.headers["Authorization"] == "Bearer whatsapp-test-token"
    assert call.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505559999",
        "type": "text",
        "text": {"body": GREETING},
    }

    messenger = {
        "object": "page",
        "entry": [{"id": "<PAGE_ID>", "time": 1458692752478, "messaging": [
            {"sender": {"id": "PSID-OUT"}, "recipient": {"id": "<PAGE_ID>"},
             "timestamp": 1458692752478, "message": {"mid": "mid.out", "text": "menu"}}]}],
    }  # fmt: skip
    post_signed(platforms_rasa, "messenger", messenger)
    calls = platform_api.received(lambda r: r.json["recipient"]["id"] == "PSID-OUT", 3)
    assert [c.path for c in calls] == [
        "/messenger/me/messages?access_token=messenger-test-token"
    ] * 3
    assert [c.json["message"]["text"] for c in calls] == MENU
    assert calls[1].json["message"]["quick_replies"] == [
        {"content_type": "text", "title": "Say hello", "payload": "/greet"},
        {"content_type": "text", "title": "Say goodbye", "payload": "/goodbye"},
    ]


def test_429_with_retry_after_then_200_delivers_once(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(to_chat(503), [(429, {"Retry-After": "1"}, {"ok": False})])
    post_signed(platforms_rasa, "telegram", telegram_update(503, "hi"))
    calls = platform_api.received(lambda r: to_chat(503)(r) and r.status == 200, 1)
    calls = platform_api.received(to_chat(503), 2)
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.9  # Retry-After honoured
    assert delivered(calls) == [GREETING]


def test_persistent_500_gives_up_after_the_retries_with_a_log_line(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(to_chat(504), [(500, {}, {"ok": False, "description": "boom"})] * 10)
    status, _, _ = post_signed(platforms_rasa, "telegram", telegram_update(504, "hi"))
    assert status == 200  # the webhook does not wait for delivery (outbound.wait is false)
    line = (
        "Channel telegram: could not deliver a text message for conversation 504 after "
        '4 attempt(s); the platform answered HTTP 500: {"ok": false, "description": "boom"}'
    )
    deadline = time.monotonic() + 30
    while line not in platforms_rasa.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert line in platforms_rasa.log_text()
    assert [c.status for c in platform_api.received(to_chat(504), 4)] == [500] * 4
    assert TOKEN not in platforms_rasa.log_text()  # the token is in the URL: never logged


def test_order_of_a_three_message_reply_survives_retries(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(
        to_chat(505), [(429, {"Retry-After": "1"}, {"ok": False}), (503, {}, {"ok": False})]
    )
    post_signed(platforms_rasa, "telegram", telegram_update(505, "menu"))
    calls = platform_api.received(lambda r: to_chat(505)(r) and r.status == 200, 3)
    assert delivered(calls) == MENU
    assert [c.status for c in platform_api.requests if to_chat(505)(c)][:3] == [429, 503, 200]


def test_a_slow_conversation_does_not_hold_up_another(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(to_chat(506), [(500, {}, {})] * 3)  # ~3.5 s of backoff for chat 506
    post_signed(platforms_rasa, "telegram", telegram_update(506, "hi"))
    started = time.monotonic()
    post_signed(platforms_rasa, "telegram", telegram_update(507, "hi"))
    [other] = platform_api.received(to_chat(507), 1)
    assert other.at - started < 2.0
    assert delivered(platform_api.received(lambda r: to_chat(506)(r) and r.status == 200, 1))


def test_trigger_intent_delivers_through_the_platform_api(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    status, _, body = platforms_rasa.post(
        "/conversations/508/trigger_intent?output_channel=telegram", {"name": "greet"}
    )
    assert status == 200, body
    [call] = platform_api.received(to_chat(508), 1)
    assert call.json == {"chat_id": "508", "text": GREETING}


def test_reply_url_outside_the_allow_list_is_not_called(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    allowed = f"http://127.0.0.1:{platform_api.port}/hook/allowed"
    refused = f"http://localhost:{platform_api.port}/hook/refused"
    for url in (allowed, refused):
        status, _, _ = platforms_rasa.post(
            "/webhooks/hook/webhook", {"user": "hook-user", "text": "hi", "response_url": url}
        )
        assert status == 200
    hook_calls = platform_api.received(lambda r: r.path.startswith("/hook/"), 1)
    assert [c.path for c in hook_calls] == ["/hook/allowed"]
    assert (
        "Channel hook: refused to send a text message for conversation hook-user to host "
        "'localhost', which is not in outbound.allow_hosts"
    ) in platforms_rasa.log_text()
