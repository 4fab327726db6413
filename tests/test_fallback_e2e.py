"""A numbered fallback round trip through the real ``rasa run``: the ``textonly`` channel of
``PLATFORM_CREDENTIALS`` (tests/conftest.py) renders text only, so the demo's menu goes out as
numbered text, and the answer "2" reaches Rasa as the second button's payload."""

import json

import pytest

from tests.platform_api import PlatformAPI, Recorded
from tests.rasa_process import RasaServer, user_events

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
WEBHOOK = "/webhooks/textonly/webhook"


def test_a_numbered_fallback_round_trip(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    user = "numbered-user-1"

    def to_user(request: Recorded) -> bool:
        return request.path == "/textonly/messages" and request.json.get("to") == user

    def texts() -> list:
        return [r.json["text"] for r in platform_api.requests if to_user(r)]

    body = json.dumps({"from": user, "text": "menu", "id": "numbered-1"}).encode()
    status, _, answer = platforms_rasa.send(WEBHOOK, body, JSON)
    assert (status, json.loads(answer)) == (200, {})
    platform_api.received(to_user, 3)
    assert texts() == [
        "Here is what I can do.",
        "Pick one:\n1. Say hello\n2. Say goodbye",
        "Or just type a message.",
    ]

    body = json.dumps({"from": user, "text": "2", "id": "numbered-2"}).encode()
    status, _, answer = platforms_rasa.send(WEBHOOK, body, JSON)
    assert (status, json.loads(answer)) == (200, {})
    platform_api.received(to_user, 4)
    assert texts()[3:] == ["Goodbye, talk soon."]
    events = user_events(platforms_rasa.tracker(user))
    assert [event["text"] for event in events] == ["menu", "/goodbye"]
    assert events[1]["parse_data"]["intent"]["name"] == "goodbye"
