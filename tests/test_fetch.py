"""Fetching before mapping: the answers of ``request.fetch`` become ``fetched.<name>``."""

import asyncio
import json
from typing import Any, Dict, Iterator, List

import pytest

from generic_connector.config import check_channel, load_channel
from generic_connector.dryrun import simulate
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.pipeline import Assistant, Pipeline
from generic_connector.request import IncomingRequest
from tests.platform_api import PlatformAPI


def channel(api_url: str = "https://webexapis.com") -> Dict[str, Any]:
    return {
        "name": "fetching",
        "request": {
            "fetch": [
                {
                    "name": "message",
                    "url": f"join('', ['{api_url}/v1/messages/', data.id])",
                    "headers": {"Authorization": "'Bearer bot-token'"},
                    "retries": 1,
                }
            ],
            "ignore": [
                {"name": "the bot's own message", "when": "fetched.message.personId == 'bot'"}
            ],
            "sender": "fetched.message.roomId",
            "text": "fetched.message.text",
            "message_id": "data.id",
        },
    }


WEBHOOK = {"resource": "messages", "event": "created", "data": {"id": "m-1", "roomId": "r-1"}}


class Echo(Assistant):
    def __init__(self) -> None:
        self.handled: List[Extracted] = []

    async def handle(self, message: Extracted) -> Replies:
        self.handled.append(message)
        return [{"recipient_id": message.sender_id, "text": f"re: {message.text}"}]


@pytest.fixture()
def api() -> Iterator[PlatformAPI]:
    server = PlatformAPI()
    yield server
    server.close()


def run(config: Dict[str, Any], body: Dict[str, Any]) -> Any:
    assistant = Echo()
    request = IncomingRequest.from_parts(json.dumps(body).encode())
    pipeline = Pipeline(load_channel(config))

    async def once() -> Any:
        try:
            return (await pipeline.run(request, assistant))[1]
        finally:
            await pipeline.fetcher.close()

    return asyncio.run(once()), assistant


def test_the_message_is_fetched_and_mapped_from_the_answer(api: PlatformAPI) -> None:
    api.plan(lambda r: r.path == "/v1/messages/m-1", [(200, {}, {"roomId": "r-1", "text": "hi"})])
    answer, assistant = run(channel(api.url), WEBHOOK)
    assert answer.status == 200
    assert [(m.sender_id, m.text, m.message_id) for m in assistant.handled] == [
        ("r-1", "hi", "m-1")
    ]
    [fetch] = [r for r in api.requests if r.path == "/v1/messages/m-1"]
    assert (fetch.method, fetch.headers["Authorization"]) == ("GET", "Bearer bot-token")


def test_a_failing_fetch_answers_503_so_the_platform_retries(api: PlatformAPI) -> None:
    api.plan(lambda r: r.path == "/v1/messages/m-1", [(500, {}, {}), (502, {}, {})])
    answer, assistant = run(channel(api.url), WEBHOOK)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "5"
    assert json.loads(answer.body) == {
        "error": "the message could not be fetched from the platform; retry later"
    }
    assert len([r for r in api.requests if r.path == "/v1/messages/m-1"]) == 2  # retried once
    assert assistant.handled == []


def test_an_answer_that_is_not_json_is_a_failed_fetch(api: PlatformAPI) -> None:
    api.plan(lambda r: True, [(200, {}, "not an object")])  # a JSON string: mapped to nothing
    answer, _ = run(channel(api.url), WEBHOOK)
    assert answer.status == 422  # fetched.message.roomId of a string: no sender


def test_ignore_rules_read_the_fetched_answer() -> None:
    result = simulate(
        load_channel(channel()),
        IncomingRequest.from_parts(json.dumps(WEBHOOK).encode()),
        fetched={"message": {"roomId": "r-1", "text": "mine", "personId": "bot"}},
    )
    assert (result["status"], result["ignored"], result["messages"]) == (
        200,
        ["the bot's own message"],
        [],
    )


def test_a_test_case_without_its_sample_answer_says_so() -> None:
    result = simulate(
        load_channel(channel()), IncomingRequest.from_parts(json.dumps(WEBHOOK).encode())
    )
    assert result["status"] == 503


def test_a_fetch_host_from_request_data_needs_allow_hosts() -> None:
    config = channel()
    config["request"]["fetch"][0]["url"] = "data.url"
    _, findings, _ = check_channel(config)
    assert [str(f) for f in findings] == [
        "<credentials>: fetching.request.fetch[0].url: the URL's host is built from request "
        "data (list the hosts it may call in allow_hosts)"
    ]
    config["request"]["fetch"][0]["allow_hosts"] = ["webexapis.com"]
    assert check_channel(config).config is not None
