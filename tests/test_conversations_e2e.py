"""Conversations end to end, through the real ``rasa run`` serving ``mappings/slack.yml``
(tests/conftest.py): a channel message keys the tracker by its thread and is answered in that
thread; a message Rasa sends on its own later goes to the same thread."""

import base64
import json
import time
import urllib.parse
from typing import Any, Dict, List

import pytest

from tests.platform_api import PlatformAPI, Recorded
from tests.rasa_process import RasaServer, request, user_events
from tests.signing import signature_headers

pytestmark = pytest.mark.e2e

GREETING = "Hello! I am the generic connector demo."


def slack_event(event: Dict[str, Any], event_id: str) -> bytes:
    """An Events API envelope (https://api.slack.com/apis/events-api#callback-field) around a
    message event (https://api.slack.com/events/message.channels)."""
    envelope = {
        "token": "one-long-verification-token",
        "team_id": "T123ABC456",
        "api_app_id": "A123ABC456",
        "event": {"type": "message", "channel_type": "channel", **event},
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
    }
    return json.dumps(envelope).encode()


def post(rasa: RasaServer, body: bytes) -> int:
    headers = {"Content-Type": "application/json", **signature_headers("slack", body)}
    status, _, answer = rasa.send("/webhooks/slack/webhook", body, headers)
    assert status == 200, answer
    return status


def posted_to(api: PlatformAPI, channel: str, count: int) -> List[Recorded]:
    def to_channel(r: Recorded) -> bool:
        return r.path == "/slack/chat.postMessage" and (r.json or {}).get("channel") == channel

    return api.received(to_channel, count)


def test_a_channel_message_is_answered_in_its_thread_keyed_by_the_thread(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    channel, ts = "C0THREAD1", f"{int(time.time())}.000100"
    post(platforms_rasa, slack_event(
        {"channel": channel, "user": "U0AAA", "text": "hello", "ts": ts, "event_ts": ts},
        "Ev0THREAD1",
    ))  # fmt: skip
    # A second user answers in the thread: the same conversation, one tracker.
    reply_ts = f"{int(time.time())}.000200"
    post(platforms_rasa, slack_event(
        {"channel": channel, "user": "U0BBB", "text": "hi", "ts": reply_ts, "event_ts": reply_ts,
         "thread_ts": ts},
        "Ev0THREAD2",
    ))  # fmt: skip
    posted = posted_to(platform_api, channel, 2)
    assert [(r.json["thread_ts"], r.json["text"]) for r in posted] == [(ts, GREETING)] * 2
    tracker = platforms_rasa.tracker(f"{channel}:{ts}")
    users = user_events(tracker)
    assert [(u["text"], u["metadata"]["user_id"]) for u in users] == [
        ("hello", "U0AAA"),
        ("hi", "U0BBB"),
    ]
    assert user_events(platforms_rasa.tracker("U0AAA")) == []  # not keyed by the user

    # Rasa sends on its own (an external event) to that tracker: the reply goes to the thread.
    query = urllib.parse.urlencode({"output_channel": "slack"})
    conversation = urllib.parse.quote(f"{channel}:{ts}", safe=":")  # Rasa does not unquote it
    status, _, answer = request(
        f"{platforms_rasa.url}/conversations/{conversation}/trigger_intent?{query}",
        json.dumps({"name": "greet"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, answer
    found = posted_to(platform_api, channel, 3)
    slack = [(r.path, r.json) for r in platform_api.requests if r.path.startswith("/slack/")]
    assert len(found) == 3, (answer, slack[-3:], platforms_rasa.log_text()[-3000:])
    third = found[2]
    assert (third.json["thread_ts"], third.json["text"]) == (ts, GREETING)


def test_a_typing_indicator_goes_out_before_the_reply(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    """Telegram's sendChatAction (``outbound.presence`` of mappings/telegram.yml) while the
    assistant works, then sendMessage; a group chat's message goes back to the group."""
    chat, user = -1001234500077, 4400077  # a supergroup (negative id) and its member
    update = {
        "update_id": 870077,
        "message": {
            "message_id": 77,
            "date": int(time.time()),
            "chat": {"id": chat, "type": "supergroup", "title": "Support"},
            "from": {"id": user, "is_bot": False, "first_name": "Ada"},
            "text": "hello",
        },
    }
    body = json.dumps(update).encode()
    headers = {"Content-Type": "application/json", **signature_headers("telegram", body)}
    status, _, answer = platforms_rasa.send("/webhooks/telegram/webhook", body, headers)
    assert status == 200, answer

    def to_chat(r: Recorded) -> bool:
        return r.path.startswith("/telegram/") and (r.json or {}).get("chat_id") == str(chat)

    made = platform_api.received(lambda r: to_chat(r) and r.path.endswith("/sendMessage"), 1)
    assert made, [r.path for r in platform_api.requests if r.path.startswith("/telegram/")][-5:]
    calls = [(r.path.rsplit("/", 1)[-1], r.json) for r in platform_api.requests if to_chat(r)]
    # Sent in the background as the message arrives, the indicator races the reply to the API
    # by a millisecond or so; tests/test_conversations.py shows the order with a slower
    # assistant. Here: both, once each, to the group.
    assert sorted(calls, key=lambda call: call[0]) == [
        ("sendChatAction", {"chat_id": str(chat), "action": "typing"}),
        ("sendMessage", {"chat_id": str(chat), "text": GREETING}),
    ]
    tracker = platforms_rasa.tracker(str(chat))  # one tracker per chat: sender_id conversation
    [user_event] = user_events(tracker)
    assert user_event["metadata"]["user_id"] == str(user)


def test_a_photo_is_downloaded_with_the_bot_token_into_metadata(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    """mappings/telegram.yml: getFile, then the file from /file/bot<token>/<file_path>; the
    tracker holds the content (base64), never the URL with the token."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(48))
    file_path = "photos/file_31.png"
    platform_api.plan(
        lambda r: r.path.startswith("/telegram/bot") and "getFile?file_id=photo-big-31" in r.path,
        [(200, {}, {"ok": True, "result": {"file_id": "photo-big-31", "file_path": file_path}})],
    )
    platform_api.plan(
        lambda r: r.path.endswith(f"/{file_path}"), [(200, {"Content-Type": "image/png"}, png)]
    )
    chat = 5500031
    update = {
        "update_id": 880031,
        "message": {
            "message_id": 31,
            "date": int(time.time()),
            "chat": {"id": chat, "type": "private", "first_name": "Ada"},
            "from": {"id": chat, "is_bot": False, "first_name": "Ada"},
            "photo": [
                {"file_id": "photo-small-31", "file_unique_id": "s31", "width": 90, "height": 90},
                {"file_id": "photo-big-31", "file_unique_id": "b31", "width": 800,
                 "height": 800, "file_size": len(png)},
            ],
        },
    }  # fmt: skip
    body = json.dumps(update).encode()
    headers = {"Content-Type": "application/json", **signature_headers("telegram", body)}
    status, _, answer = platforms_rasa.send("/webhooks/telegram/webhook", body, headers)
    assert status == 200, answer
    [user_event] = user_events(platforms_rasa.tracker(str(chat)))
    assert user_event["text"] == "/attachment"
    assert user_event["metadata"]["attachments"] == [
        {
            "type": "image",
            "id": "photo-big-31",
            "size": len(png),
            "data": base64.b64encode(png).decode(),
            "mime": "image/png",
        }
    ]
    [download] = [r for r in platform_api.requests if r.path.endswith(f"/{file_path}")]
    token = download.path.split("/file/bot", 1)[1].split("/", 1)[0]
    assert token and token not in json.dumps(platforms_rasa.tracker(str(chat)))
