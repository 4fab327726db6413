"""Fetching before mapping: the answers of ``request.fetch`` become ``fetched.<name>``."""

import asyncio
import json
from typing import Any, Dict, Iterator, List

import pytest

from generic_connector.cli.dryrun import simulate
from generic_connector.config import check_channel, load_channel
from generic_connector.pipeline import Pipeline
from generic_connector.request import IncomingRequest
from tests.platform_api import PlatformAPI
from tests.test_pipeline import Echo


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


def from_request_data(allow_hosts: List[str]) -> Dict[str, Any]:
    """The fetch URL is the webhook's ``data.url``: only allowed hosts and ports are called."""
    config = channel()
    config["request"]["fetch"][0].update(url="data.url", allow_hosts=allow_hosts)
    return config


def webhook_naming(url: str) -> Dict[str, Any]:
    return {**WEBHOOK, "data": {**WEBHOOK["data"], "url": url}}


def test_an_allowed_host_is_called_only_on_the_port_its_entry_names(
    api: PlatformAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.plan(lambda r: True, [(200, {}, {"roomId": "r-1", "text": "hi"})])
    url = f"{api.url}/v1/messages/m-1"
    answer, _ = run(from_request_data(["127.0.0.1"]), webhook_naming(url))  # port 80 only
    assert answer.status == 503
    assert api.requests == []
    assert (
        f"fetch 'message': host '127.0.0.1' on port {api.port} is not in allow_hosts" in caplog.text
    )
    answer, assistant = run(from_request_data([f"127.0.0.1:{api.port}"]), webhook_naming(url))
    assert answer.status == 200
    assert [m.text for m in assistant.handled] == ["hi"]


@pytest.mark.parametrize(
    "url, reason",
    [
        (
            "http://127.0.0.1:{port}\uff20evil.example/x",
            "an invalid URL (a malformed host or port)",
        ),
        (
            "http://127.0.0.1:{port}\uff0fv1/messages/m-1",
            "an invalid URL (a malformed host or port)",
        ),
        ("http://127.0.0.1:{port}\u2100x/", "an invalid URL (a malformed host or port)"),
        (
            "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/x",
            "a host that is not plain ASCII",
        ),
        ("http://\uff41pi.telegram.org/x", "a host that is not plain ASCII"),
        ("http://127.0.0.1:99999/x", "an invalid URL (a malformed host or port)"),
    ],
    ids=[
        "fullwidth @",
        "fullwidth /",
        "a/c sign",
        "fullwidth host",
        "one fullwidth letter",
        "port",
    ],
)
def test_hosts_that_nfkc_or_idna_would_rewrite_are_refused_cleanly(
    api: PlatformAPI, caplog: pytest.LogCaptureFixture, url: str, reason: str
) -> None:
    config = from_request_data([f"127.0.0.1:{api.port}", "example.com", "api.telegram.org"])
    answer, assistant = run(config, webhook_naming(url.format(port=api.port)))
    assert (answer.status, json.loads(answer.body)) == (
        503,
        {"error": "the message could not be fetched from the platform; retry later"},
    )
    assert f"fetch 'message': the url template gave {reason}" in caplog.text
    assert "Traceback" not in caplog.text
    assert (api.requests, assistant.handled) == ([], [])


@pytest.mark.parametrize(
    "message_id",
    ["../../../x", "..", "%2e%2e/%2E%2E/x", "%252e%252e/x", "..\\..\\x", "./m-1"],
)
def test_request_data_in_the_path_cannot_walk_out_of_it(
    api: PlatformAPI, caplog: pytest.LogCaptureFixture, message_id: str
) -> None:
    body = {**WEBHOOK, "data": {"id": message_id, "roomId": "r-1"}}
    answer, assistant = run(channel(api.url), body)
    assert answer.status == 503
    assert "fetch 'message': the url template gave a path with a '.' or '..' segment" in caplog.text
    assert (api.requests, assistant.handled) == ([], [])


def test_an_id_with_dots_that_are_no_segment_is_fetched(api: PlatformAPI) -> None:
    api.plan(lambda r: True, [(200, {}, {"roomId": "r-1", "text": "hi"})])
    answer, _ = run(channel(api.url), {**WEBHOOK, "data": {"id": "m..1.x", "roomId": "r-1"}})
    assert answer.status == 200
    assert [r.path for r in api.requests] == ["/v1/messages/m..1.x"]


# Bodies, `when`, chains and tokens -------------------------------------------------------------


def test_a_fetch_carries_a_json_or_form_body(api: PlatformAPI) -> None:
    config = channel(api.url)
    config["request"]["fetch"] = [
        {
            "name": "message",
            "url": f"'{api.url}/v1/lookup'",
            "method": "POST",
            "body": "{id: data.id, fields: ['text']}",
        },
        {
            "name": "person",
            "url": f"'{api.url}/v1/people'",
            "method": "POST",
            "content_type": "form",
            "body": "{room: fetched.message.roomId}",
        },
    ]
    config["request"]["sender"] = "fetched.person.id"
    api.plan(lambda r: r.path == "/v1/lookup", [(200, {}, {"roomId": "r-9", "text": "hi"})])
    api.plan(lambda r: r.path == "/v1/people", [(200, {}, {"id": "p-3"})])
    answer, assistant = run(config, WEBHOOK)
    assert answer.status == 200
    assert [(m.sender_id, m.text) for m in assistant.handled] == [("p-3", "hi")]
    lookup, people = api.requests
    assert (lookup.method, lookup.headers["Content-Type"]) == ("POST", "application/json")
    assert lookup.json == {"id": "m-1", "fields": ["text"]}
    # The second request was built from the first one's answer.
    assert people.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert people.body == b"room=r-9"


def test_a_fetch_whose_when_is_false_is_not_made(api: PlatformAPI) -> None:
    config = channel(api.url)
    config["request"]["fetch"][0]["when"] = "resource == 'messages'"
    config["request"]["ignore"] = [{"name": "not a message", "when": "resource != 'messages'"}]
    answer, assistant = run(config, {**WEBHOOK, "resource": "memberships"})
    assert (answer.status, assistant.handled, api.requests) == (200, [], [])
    api.plan(lambda r: True, [(200, {}, {"roomId": "r-1", "text": "hi"})])
    answer, assistant = run(config, WEBHOOK)
    assert [m.text for m in assistant.handled] == ["hi"]
    assert len(api.requests) == 1


def test_the_dry_run_shows_null_for_a_fetch_that_was_not_made() -> None:
    config = channel()
    config["request"]["fetch"][0]["when"] = "resource == 'messages'"
    config["request"]["ignore"] = [{"name": "no message", "when": "fetched.message == null"}]
    result = simulate(
        load_channel(config),
        IncomingRequest.from_parts(json.dumps({**WEBHOOK, "resource": "rooms"}).encode()),
    )
    assert (result["status"], result["ignored"]) == (200, ["no message"])


def token_channel(api_url: str) -> Dict[str, Any]:
    config = channel(api_url)
    config["request"]["fetch"][0]["headers"] = {
        "Authorization": "join(' ', ['Bearer', token('api')])"
    }
    config["tokens"] = {
        "api": {
            "url": f"'{api_url}/oauth/token'",
            "body": "{grant_type: 'client_credentials', client_id: 'id', client_secret: 's'}",
        }
    }
    return config


def run_with_tokens(config: Dict[str, Any], bodies: List[Dict[str, Any]]) -> List[Any]:
    """Several webhooks through one channel built as rasa run builds it (stores.build)."""
    from generic_connector import stores

    loaded = load_channel(config)
    parts = stores.build(loaded)
    pipeline = Pipeline(loaded, parts.store, parts.outbox, fetcher=parts.fetcher)

    async def all_of_them() -> List[Any]:
        try:
            return [
                (await pipeline.run(IncomingRequest.from_parts(json.dumps(b).encode()), Echo()))[1]
                for b in bodies
            ]
        finally:
            await pipeline.fetcher.close()

    return asyncio.run(all_of_them())


def test_token_in_a_fetch_is_got_once_kept_and_renewed_after_a_401(api: PlatformAPI) -> None:
    def token_request(request: Any) -> bool:
        return request.path == "/oauth/token"

    api.plan(
        token_request,
        [
            (200, {}, {"access_token": "first", "expires_in": 3600}),
            (200, {}, {"access_token": "second", "expires_in": 3600}),
        ],
    )
    api.plan(
        lambda r: r.path.startswith("/v1/messages/"),
        [
            (200, {}, {"roomId": "r-1", "text": "one"}),
            (401, {}, {"error": "expired"}),
            (200, {}, {"roomId": "r-1", "text": "two"}),
        ],
    )
    second = {**WEBHOOK, "data": {"id": "m-2", "roomId": "r-1"}}
    answers = run_with_tokens(token_channel(api.url), [WEBHOOK, second])
    assert [a.status for a in answers] == [200, 200]
    fetches = [r for r in api.requests if r.path.startswith("/v1/messages/")]
    assert [r.headers["Authorization"] for r in fetches] == [
        "Bearer first",
        "Bearer first",  # refused with 401: the token is dropped and a new one got
        "Bearer second",
    ]
    tokens = [r for r in api.requests if token_request(r)]
    assert len(tokens) == 2
    assert tokens[0].body == b"grant_type=client_credentials&client_id=id&client_secret=s"


def test_a_fetch_with_no_token_to_be_had_answers_503(api: PlatformAPI) -> None:
    api.plan(lambda r: r.path == "/oauth/token", [(400, {}, {"error": "invalid_client"})] * 3)
    [answer] = run_with_tokens(token_channel(api.url), [WEBHOOK])
    assert answer.status == 503
    assert not [r for r in api.requests if r.path.startswith("/v1/messages/")]
    assert b"invalid_client" not in answer.body


def test_token_in_a_fetch_body_is_a_finding() -> None:
    config = token_channel("https://webexapis.com")
    config["request"]["fetch"][0]["body"] = "{token: token('api')}"
    _, findings, _ = check_channel(config)
    assert [(f.code, f.path, f.message) for f in findings] == [
        (
            "invalid-value",
            "fetching.request.fetch[0].body",
            "token('api') is not filled in a body, only in URLs and headers",
        )
    ]
