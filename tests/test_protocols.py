"""Platforms' own protocols end to end, through the real ``rasa run`` serving the channels of
``PLATFORM_CREDENTIALS`` (tests/conftest.py): routes with path parameters and the channel's
JSON answers for a path or a method it does not serve."""

import json
from typing import Any, Dict

import pytest

from tests.rasa_process import RasaServer, user_events

pytestmark = pytest.mark.e2e

GREETING = "Hello! I am the generic connector demo."
JSON = {"Content-Type": "application/json"}
SIGNED = {**JSON, "Authorization": "Bearer transactions-test-token"}  # conftest's API_TOKENS
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
