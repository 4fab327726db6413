"""Every shipped mapping's documented payloads, through a real ``rasa run``.

Each test case of each mapping in ``mappings/`` is sent over HTTP as the platform would send
it. Messages must reach the assistant with the right sender, text and metadata (read back from
the tracker), ignored events must not, handshakes must answer exactly, and synchronous
platforms must get the assistant's real replies in their own format.
"""

import copy
import json
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, Dict, List

import pytest

from generic_connector.cli.dryrun import case_request, simulate
from generic_connector.config import load_channel, load_yaml
from generic_connector.expressions import EvaluationError
from generic_connector.mapping import MappingError
from tests.conftest import API_TOKENS, PLATFORMS, VERIFY_TOKENS
from tests.rasa_process import ROOT, RasaServer, user_events
from tests.signing import WEBHOOK_SECRETS, signature_headers

SERVER_ENV = {**VERIFY_TOKENS, **API_TOKENS, **WEBHOOK_SECRETS}

pytestmark = pytest.mark.e2e


def cases() -> List[Any]:
    """Every test case of the shipped mappings, but those that need other secrets than the
    server has (the wrong-token cases; see test_wrong_verify_token_is_refused)."""
    found = []
    for name in PLATFORMS:
        document = load_yaml(ROOT / "mappings" / f"{name}.yml")
        for case in document["tests"]:
            if case.get("env", {}).items() <= SERVER_ENV.items():
                found.append(pytest.param(name, case, id=f"{name}: {case['name']}"))
    return found


@pytest.fixture(autouse=True)
def verify_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SERVER_ENV.items():
        monkeypatch.setenv(name, value)


def send_case(rasa: RasaServer, name: str, case: Dict[str, Any]) -> Any:
    request = case_request(case, ROOT / "mappings")
    path = f"/webhooks/{name}{request.path}"
    if request.query:
        path += "?" + urllib.parse.urlencode(request.query)
    body = request.body if request.method == "POST" else None
    headers = dict(request.headers)
    if "time" in case and case["expect"].get("status") != 401:  # signed for then: sign for now
        headers.update({k.lower(): v for k, v in signature_headers(name, request.body).items()})
    return rasa.send(path, body, headers, request.method)


def bot_replies_after(tracker: Dict[str, Any], message_id: Any, text: str) -> List[Dict[str, Any]]:
    """The bot's messages that answered the user message with ``message_id`` and ``text``."""
    events = tracker["events"]
    start = next(
        i
        for i, e in enumerate(events)
        if e["event"] == "user" and e["text"] == text and message_id in (None, e["message_id"])
    )
    replies = []
    for event in events[start + 1 :]:
        if event["event"] == "user":
            break
        if event["event"] == "bot":
            replies.append({"text": event["text"]})
    return replies


@pytest.mark.parametrize("name, case", cases())
def test_documented_payload_through_rasa(
    platforms_rasa: RasaServer, name: str, case: Dict[str, Any]
) -> None:
    config = load_channel({"mapping": f"mappings/{name}.yml"})
    request = case_request(case, ROOT / "mappings")
    expected = simulate(config, request, case.get("replies"), case.get("time"), case.get("fetched"))
    # The dry run agrees with the case (a refusal only where the case expects one)...
    assert ("error" in expected) == (case["expect"].get("status", 200) >= 400), expected
    status, headers, body = send_case(platforms_rasa, name, case)  # ...and so does Rasa.
    assert status == case["expect"].get("status", 200), body

    if expected.get("handshake") or "error" in expected:
        # Answered without Rasa: exactly what the platform expects.
        if "response" in case["expect"]:
            assert body.decode() == case["expect"]["response"]
        return

    for message in expected["messages"]:
        tracker = platforms_rasa.tracker(message["sender"])
        # Documented examples may share ids (Telegram's all use update_id 10000): match both.
        matching = [
            e
            for e in user_events(tracker)
            if e["text"] == message["text"] and message["message_id"] in (None, e["message_id"])
        ]
        assert matching, f"{message} not in {user_events(tracker)}"
        repeated = f"message {message['message_id']} from sender {message['sender']} was already"
        if message["message_id"] is not None and repeated in platforms_rasa.log_text():
            continue  # the documentation's examples share this id: rightly not handled twice
        user = matching[-1]
        assert user["input_channel"] == name
        assert user["metadata"].items() >= (message["metadata"] or {}).items()

    if expected["ignored"]:
        log = platforms_rasa.log_text()
        for rule in expected["ignored"]:
            assert f"ignored by rule {rule!r}" in log
        delivered = {(m["sender"], m["message_id"]) for m in expected["messages"]}
        for event in config.request.select_events(json.loads(case_request(case, ROOT).body)):
            try:
                would_be = config.request.map(event, ignore_rules=False)
            except (MappingError, EvaluationError):
                continue  # no sender or text: it could not have reached Rasa either way
            if (would_be.sender_id, would_be.message_id) not in delivered:
                tracker = platforms_rasa.tracker(would_be.sender_id)
                ids = [e["message_id"] for e in user_events(tracker) if e["input_channel"] == name]
                assert would_be.message_id not in ids

    if expected["messages"] and name in ("twilio", "mattermost", "rocketchat"):
        # The synchronous answer is the template applied to the assistant's real replies.
        [message] = expected["messages"]
        tracker = platforms_rasa.tracker(message["sender"])
        replies = bot_replies_after(tracker, message["message_id"], message["text"])
        assert replies, "the assistant answered nothing"
        rendered = simulate(config, request, replies, case.get("time"), case.get("fetched"))
        assert headers["content-type"] == rendered["response"]["content_type"]
        if name == "twilio":
            assert body.decode() == rendered["response"]["body"]
            bodies = [m.findtext("Body") for m in ET.fromstring(body).iter("Message")]
            assert bodies == [r["text"] for r in replies]
        else:
            assert json.loads(body) == rendered["response"]["body"]


def test_whatsapp_batch_from_two_senders_keeps_conversations_and_order(
    platforms_rasa: RasaServer,
) -> None:
    # The documented text message, repeated as three messages from two senders.
    document = json.loads((ROOT / "tests/payloads/whatsapp/text_message.json").read_text())
    template = document["entry"][0]["changes"][0]["value"]["messages"][0]
    sent = [("16505550001", "hello"), ("16505550002", "thanks"), ("16505550001", "bye")]
    messages = []
    for index, (sender, text) in enumerate(sent):
        message = copy.deepcopy(template)
        message.update({"from": sender, "id": f"wamid.batch-{index}", "text": {"body": text}})
        messages.append(message)
    document["entry"][0]["changes"][0]["value"]["messages"] = messages

    raw = json.dumps(document).encode()
    headers = {"Content-Type": "application/json", **signature_headers("whatsapp", raw)}
    status, _, _ = platforms_rasa.send("/webhooks/whatsapp/webhook", raw, headers)
    assert status == 200
    first = user_events(platforms_rasa.tracker("16505550001"))
    second = user_events(platforms_rasa.tracker("16505550002"))
    assert [e["text"] for e in first] == ["hello", "bye"]
    assert [e["text"] for e in second] == ["thanks"]
    assert [e["message_id"] for e in first + second] == [
        "wamid.batch-0",
        "wamid.batch-2",
        "wamid.batch-1",
    ]


@pytest.mark.parametrize(
    "path, body, content_type, status, error",
    [
        ("/webhooks/twilio/webhook", b'{"From": "+1", "Body": "hi"}', "application/json", 415,
         "this channel expects a form body"),
        ("/webhooks/telegram/webhook", b"update_id=1&text=hi", "application/x-www-form-urlencoded",
         400, "request body is not valid JSON (Content-Type: application/x-www-form-urlencoded)"),
    ],
)  # fmt: skip
def test_form_where_json_is_expected_and_the_reverse(
    platforms_rasa: RasaServer, path: str, body: bytes, content_type: str, status: int, error: str
) -> None:
    platform = path.split("/")[2]
    headers = {"Content-Type": content_type, **signature_headers(platform, body)}
    answer = platforms_rasa.send(path, body, headers)
    assert answer[0] == status
    assert json.loads(answer[2])["error"].startswith(error)


def test_unknown_verification_request_is_refused(platforms_rasa: RasaServer) -> None:
    status, _, body = platforms_rasa.send(
        "/webhooks/whatsapp/webhook?hub.mode=other", None, {}, method="GET"
    )
    assert status == 400
    assert "no handshake of this channel matches GET /webhook" in json.loads(body)["error"]


@pytest.mark.parametrize("name", ["whatsapp", "messenger"])
def test_wrong_verify_token_is_refused(platforms_rasa: RasaServer, name: str) -> None:
    query = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong"
    status, _, body = platforms_rasa.send(f"/webhooks/{name}/webhook?{query}", None, {}, "GET")
    assert status == 403
    assert b"1158201444" not in body
    assert json.loads(body) == {"error": "verification failed"}
