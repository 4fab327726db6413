"""A channel's request handling without Rasa: the dry run and the mapping test cases.

Runs the channel's own pipeline with sample bot replies standing in for the assistant and
outbound requests recorded instead of sent, so a mapping can be checked on a desk in
milliseconds.
"""

import asyncio
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Dict, Iterator, List, Optional

from generic_connector.answers import Rendered
from generic_connector.config import ChannelConfig, rebuild_auth
from generic_connector.errors import GenericConnectorError
from generic_connector.fetch import SampleFetcher
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.outbound import Outbound, OutboundRequest
from generic_connector.outbox import Outbox
from generic_connector.pipeline import Assistant, Pipeline, make_store
from generic_connector.request import IncomingRequest, is_json, media_type_of

MESSAGE_FIELDS = ("sender", "text", "input_channel", "metadata", "message_id")

# One bot message of each kind Rasa sends: the answers of every test case's request are
# rendered with them too (``answer_problems``).
SAMPLE_REPLIES: List[Dict[str, Any]] = [
    {"text": "Hello"},
    {"text": "Pick one", "buttons": [{"title": "Yes", "payload": "/affirm"}]},
    {"image": "https://example.com/picture.png"},
    {"custom": {"kind": "card", "title": "A card"}},
]


class SampleAssistant(Assistant):
    """Answers every user message with the same sample replies."""

    def __init__(self, replies: Optional[List[Dict[str, Any]]] = None) -> None:
        self.replies = replies or []

    async def handle(self, message: Extracted) -> Replies:
        return [{"recipient_id": message.sender_id, **reply} for reply in self.replies]


class Recorder(Outbox):
    """Stands in for delivery: keeps the API requests instead of sending them."""

    def __init__(self) -> None:
        self.requests: List[OutboundRequest] = []

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> Awaitable[Any]:
        self.requests.extend(requests)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


def simulate(
    config: ChannelConfig,
    request: IncomingRequest,
    replies: Optional[List[Dict[str, Any]]] = None,
    now: Optional[float] = None,
    fetched: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """What the channel would hand to Rasa and answer for ``request``.

    ``replies`` are the bot messages Rasa is assumed to produce for each user message
    (without ``recipient_id``); ``now`` is the time signatures are checked at; ``fetched``
    the sample answers of ``request.fetch`` by name. The request
    goes through the channel's own pipeline, with outbound requests recorded, not sent, and
    environment variables in them shown by name.
    """
    recorder = Recorder()
    pipeline = Pipeline(
        config,
        make_store(config),
        recorder,
        outbound_environ=_masked(config),
        fetcher=SampleFetcher(fetched),
    )
    exchange, answer = asyncio.run(pipeline.run(request, SampleAssistant(replies), now))
    if exchange.refusal is not None:
        result = {"status": answer.status, "error": json.loads(answer.body), "messages": []}
        if exchange.refusal.reason:  # what the server would log, e.g. why a signature failed
            result["reason"] = exchange.refusal.reason
        return result
    if exchange.handshake is not None:
        return {"status": answer.status, "handshake": True, **_answer(answer)}
    result = {
        "status": answer.status,
        "messages": [_message(m) for m in exchange.messages],
        "ignored": [rule for _, rule in exchange.ignored],
        **_answer(answer),
    }
    outbound = config.outbound
    if outbound is not None:
        result["outbound"] = [_shown(outbound, r) for r in recorder.requests]
    if exchange.problem is not None:
        result["problem"] = exchange.problem
    return result


def _masked(config: ChannelConfig) -> Dict[str, str]:
    """The environment as outbound templates see it in a dry run: set variables by name."""
    return {name: f"${{{name}}}" for name in config.env_names() if name in os.environ}


def _shown(outbound: Outbound, request: OutboundRequest) -> Dict[str, Any]:
    sent_json = is_json(media_type_of(request.headers.get("Content-Type", "")))
    body = json.loads(request.body) if request.body and sent_json else None
    return {
        "kind": request.kind,
        "method": request.method,
        "url": request.url,
        "headers": dict(request.headers),
        "body": body if body is not None else (request.body or b"").decode(),
        "allowed": outbound.allows(request),
    }


def _message(extracted: Extracted) -> Dict[str, Any]:
    return {
        "sender": extracted.sender_id,
        "text": extracted.text,
        "input_channel": extracted.input_channel,
        "metadata": extracted.metadata,
        "message_id": extracted.message_id,
    }


def _answer(rendered: Rendered) -> Dict[str, Any]:
    text = rendered.body.decode("utf-8")
    as_json = is_json(media_type_of(rendered.content_type))
    return {
        "response": {
            "content_type": rendered.content_type,
            "headers": dict(rendered.headers),
            "body": json.loads(text) if as_json and text else text,
        }
    }


class CaseError(GenericConnectorError, ValueError):
    """A test case that cannot be run, e.g. because its body file is missing."""


def case_request(case: Dict[str, Any], base_dir: Path) -> IncomingRequest:
    """The request a test case describes; ``body_file`` is relative to ``base_dir``."""
    if "body_file" in case:
        try:
            raw = (base_dir / case["body_file"]).read_bytes()
        except OSError:
            raise CaseError(f"body file {case['body_file']!r} not found") from None
    elif isinstance(case.get("body"), str):
        raw = case["body"].encode("utf-8")
    elif "body" in case:
        raw = json.dumps(case["body"]).encode("utf-8")
    else:
        raw = b""
    headers = dict(case.get("headers", {}))
    if raw and "body" in case and not isinstance(case["body"], str):
        headers.setdefault("Content-Type", "application/json")
    return IncomingRequest.from_parts(
        raw, headers, case.get("query"), case.get("method", "POST"), case.get("path", "/webhook")
    )


@contextmanager
def environment(variables: Dict[str, str]) -> Iterator[None]:
    """The variables a test case sets, while its dry run runs."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_case(config: ChannelConfig, case: Dict[str, Any], base_dir: Path) -> List[str]:
    """Run one test case; return what differs from its expectations (empty when it passes)."""
    with environment(case.get("env", {})):
        config = rebuild_auth(config)  # it reads its secrets when built: in this environment
        request = case_request(case, base_dir)
        result = simulate(
            config, request, case.get("replies"), case.get("time"), case.get("fetched")
        )
    expect = case["expect"]
    messages = result.get("messages", [])
    failures = []
    if "status" in expect and expect["status"] != result["status"]:
        failures.append(_differs("status", expect["status"], result["status"]) + _why(result))
    if "error" in expect:
        actual = result.get("error", {}).get("error", "")
        if expect["error"] not in actual:
            failures.append(
                f"error: expected a message containing {expect['error']!r}, got {actual!r}"
            )
    expected_messages = expect.get("messages", [])
    single = {key: expect[key] for key in MESSAGE_FIELDS if key in expect}
    if single:
        expected_messages = [single]
    if expected_messages and "error" in result:
        failures.append("expected messages for Rasa, but the request was refused" + _why(result))
    elif "messages" in expect and len(expect["messages"]) != len(messages):
        failures.append(f"messages: expected {len(expect['messages'])}, got {len(messages)}")
    else:
        for index, wanted in enumerate(expected_messages):
            got = messages[index] if index < len(messages) else {}
            for key, value in wanted.items():
                if got.get(key) != value:
                    label = key if single else f"messages[{index}].{key}"
                    failures.append(_differs(label, value, got.get(key)))
    if "ignored" in expect and expect["ignored"] != result.get("ignored", []):
        failures.append(_differs("ignored", expect["ignored"], result.get("ignored", [])))
    if "outbound" in expect:
        actual_requests = result.get("outbound", [])
        if len(actual_requests) != len(expect["outbound"]):
            failures.append(
                f"outbound: expected {len(expect['outbound'])} requests, got {len(actual_requests)}"
            )
        for index, (wanted, got) in enumerate(zip(expect["outbound"], actual_requests)):
            for key, value in wanted.items():
                if got.get(key) != value:
                    failures.append(_differs(f"outbound[{index}].{key}", value, got.get(key)))
    if "response" in expect:
        if "response" not in result:
            failures.append("expected a response, but the request was refused" + _why(result))
        elif result["response"]["body"] != expect["response"]:
            failures.append(_differs("response", expect["response"], result["response"]["body"]))
    return failures


def answer_problem(config: ChannelConfig, case: Dict[str, Any], base_dir: Path) -> Optional[str]:
    """Why the answer to a test case's request cannot be rendered when the bot sends one
    message of each kind (``SAMPLE_REPLIES``), or None. Rasa would have handled the message."""
    with environment(case.get("env", {})):
        config = rebuild_auth(config)
        request = case_request(case, base_dir)
        result = simulate(config, request, SAMPLE_REPLIES, case.get("time"), case.get("fetched"))
    return result.get("problem")


def _why(result: Dict[str, Any]) -> str:
    error = result.get("error")
    return f" ({result['status']}: {error['error']})" if error else ""


def _differs(key: str, expected: Any, actual: Any) -> str:
    return f"{key}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
