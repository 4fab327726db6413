"""The generic channel under a real ``rasa run --credentials``, answering real HTTP requests."""

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.rasa_process import ENV, ROOT, RasaServer, free_port, run_args, user_events

pytestmark = pytest.mark.e2e

MYIO_VARIATION = "Hello from myio! This reply is the myio variation."
DEFAULT_GREETING = "Hello! I am the generic connector demo."


def new_sender() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def test_health_route_of_each_generic_channel(rasa: RasaServer) -> None:
    for name in ("myio", "restlike", "shop"):
        assert rasa.get_json(f"/webhooks/{name}/") == {"status": "ok"}


def test_myio_seed_curl_example_gets_the_assistants_reply(rasa: RasaServer) -> None:
    sender = new_sender()
    status, headers, body = rasa.post(
        "/webhooks/myio/webhook", {"sender": sender, "message": "Hi there!", "metadata": {}}
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == [{"recipient_id": sender, "text": MYIO_VARIATION}]


def test_myio_seed_code_body_with_text_field(rasa: RasaServer) -> None:
    sender = new_sender()
    status, _, body = rasa.post("/webhooks/myio/webhook", {"sender": sender, "text": "thanks"})
    assert status == 200
    assert json.loads(body) == [{"recipient_id": sender, "text": "You are welcome."}]


def test_channel_variation_is_used_for_the_generic_channel_and_not_for_rest(
    rasa: RasaServer,
) -> None:
    generic = rasa.post("/webhooks/myio/webhook", {"sender": new_sender(), "text": "hello"})
    rest = rasa.post("/webhooks/rest/webhook", {"sender": new_sender(), "message": "hello"})
    assert [m["text"] for m in json.loads(generic[2])] == [MYIO_VARIATION]
    assert [m["text"] for m in json.loads(rest[2])] == [DEFAULT_GREETING]


def test_rest_mapping_answers_like_rasas_rest_channel(rasa: RasaServer) -> None:
    sender = new_sender()
    ours = rasa.post("/webhooks/restlike/webhook", {"sender": sender, "message": "bye"})
    theirs = rasa.post("/webhooks/rest/webhook", {"sender": sender + "-r", "message": "bye"})
    assert ours[0] == theirs[0] == 200
    expected = [{"recipient_id": sender, "text": "Goodbye, talk soon."}]
    assert json.loads(ours[2]) == expected
    assert json.loads(theirs[2]) == [{**expected[0], "recipient_id": sender + "-r"}]


def test_nested_payload_with_yaml_only(rasa: RasaServer) -> None:
    customer = new_sender()
    payload = {
        "data": {
            "customer": {"id": customer, "name": "Ann"},
            "message": {"id": "m-1", "body": "are you a bot?"},
            "order": {"id": 4711, "tags": ["gift", "express"]},
        }
    }
    status, _, body = rasa.post("/webhooks/shop/webhook", payload)
    assert status == 200
    assert json.loads(body) == {
        "replies": ["I am a bot, served by Rasa through the generic connector."],
        "customer": "Ann",
    }
    [user] = user_events(rasa.tracker(customer))
    assert user["text"] == "are you a bot?"
    assert user["message_id"] == "m-1"
    assert user["input_channel"] == "shop"
    assert user["metadata"]["customer"] == "Ann"
    assert user["metadata"]["order"] == 4711
    assert user["metadata"]["tags"] == ["gift", "express"]


def test_input_channel_and_metadata_land_in_the_tracker(rasa: RasaServer) -> None:
    sender = new_sender()
    rasa.post(
        "/webhooks/restlike/webhook",
        {"sender": sender, "message": "hi", "input_channel": "kiosk", "metadata": {"lang": "de"}},
    )
    rasa.post("/webhooks/myio/webhook", {"sender": sender, "text": "thanks"})
    first, second = user_events(rasa.tracker(sender))
    assert (first["input_channel"], first["metadata"]["lang"]) == ("kiosk", "de")
    assert second["input_channel"] == "myio"  # the default: the channel's name
    assert rasa.tracker(sender)["latest_input_channel"] == "myio"


def test_two_generic_channels_keep_their_own_conversations(rasa: RasaServer) -> None:
    sender = new_sender()
    rasa.post("/webhooks/myio/webhook", {"sender": sender, "text": "hello"})
    rasa.post("/webhooks/restlike/webhook", {"sender": sender, "message": "bye"})
    channels = [e["input_channel"] for e in user_events(rasa.tracker(sender))]
    assert channels == ["myio", "restlike"]


@pytest.mark.parametrize(
    "body, error",
    [
        (b"Hi there!", "request body is not valid JSON"),
        (b'["sender", "text"]', "request body must be a JSON object"),
    ],
)
def test_body_that_is_not_a_json_object_is_rejected(
    rasa: RasaServer, body: bytes, error: str
) -> None:
    status, headers, answer = rasa.post("/webhooks/myio/webhook", body)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(answer)["error"].startswith(error)


@pytest.mark.parametrize(
    "body, field, expression",
    [
        ({"text": "hi"}, "sender", "sender"),
        ({"sender": "s-no-text"}, "text", "text || message"),
        ({"sender": "s-empty-text", "text": ""}, "text", "text || message"),
    ],
)
def test_missing_sender_or_text_is_rejected_and_never_reaches_rasa(
    rasa: RasaServer, body: dict, field: str, expression: str
) -> None:
    status, _, answer = rasa.post("/webhooks/myio/webhook", body)
    assert status == 422
    error = json.loads(answer)
    assert (error["field"], error["expression"]) == (field, expression)
    assert f"no {field} in the request" in error["error"]
    if "sender" in body:
        assert user_events(rasa.tracker(body["sender"])) == []


def test_lock_store_failure_answers_503_retry_after_and_is_logged_with_the_sender(
    failing_rasa: RasaServer,
) -> None:
    sender = new_sender()
    status, headers, answer = failing_rasa.post(
        "/webhooks/myio/webhook", {"sender": sender, "text": "hi"}
    )
    assert (status, headers["Retry-After"]) == (503, "2")
    assert json.loads(answer) == {"error": "the conversation is busy; retry later"}
    assert f"could not lock the conversation of sender {sender}" in failing_rasa.log_text()
    # Rasa's own REST channel hides the same failure behind 200 and an empty list.
    status, _, answer = failing_rasa.post(
        "/webhooks/rest/webhook", {"sender": sender, "message": "hi"}
    )
    assert (status, json.loads(answer)) == (200, [])


def test_broken_credentials_stop_rasa_run_with_a_clear_message(model: Path, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(
        "generic_connector.GenericChannel:\n"
        "  name: broken\n"
        "  request:\n"
        "    sender: user.id[\n"
        "    txt: message\n"
    )
    result = subprocess.run(
        run_args(model, credentials, free_port(), None),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "GenericChannelConfigError: invalid generic channel configuration:" in output
    assert "broken.request.txt: unknown key 'txt' (did you mean 'text'?)" in output
    assert "broken.request.sender: expression does not compile" in output
    assert "broken.request.text: missing required key 'text'" in output
