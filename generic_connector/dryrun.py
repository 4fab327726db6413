"""A channel's request handling without Rasa: the dry run and the mapping test cases.

Runs the same steps as the channel (``webhook.receive`` and ``Received.answer_with``) with sample
bot replies standing in for the assistant, so a mapping can be checked on a desk in
milliseconds.
"""

import dataclasses
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from generic_connector.config import ChannelConfig
from generic_connector.errors import HTTPError
from generic_connector.mapping import Extracted, Rendered
from generic_connector.request import IncomingRequest, is_json, media_type_of
from generic_connector.webhook import receive

MESSAGE_FIELDS = ("sender", "text", "input_channel", "metadata", "message_id")


def simulate(
    config: ChannelConfig,
    request: IncomingRequest,
    replies: Optional[List[Dict[str, Any]]] = None,
    now: Optional[float] = None,
) -> Dict[str, Any]:
    """What the channel would hand to Rasa and answer for ``request``.

    ``replies`` are the bot messages Rasa is assumed to produce for each user message
    (without ``recipient_id``); ``now`` is the time signatures are checked at.
    """
    try:
        received = receive(config, request, now)
        if received.answer is not None:
            return {"status": received.answer.status, "handshake": True, **_answer(received.answer)}
        bot = [
            {"recipient_id": message.sender_id, **reply}
            for message in received.messages
            for reply in replies or []
        ]
        rendered = received.answer_with(config, bot)
    except HTTPError as error:
        return {"status": error.status, "error": error.body(), "messages": []}
    result = {
        "status": rendered.status,
        "messages": [_message(m) for m in received.messages],
        "ignored": [rule for _, rule in received.ignored],
        **_answer(rendered),
    }
    if config.outbound is not None:
        inbound = {m.sender_id: m for m in received.messages}
        result["outbound"] = _outbound(config, bot, inbound)
    return result


def _outbound(
    config: ChannelConfig, bot: List[Dict[str, Any]], inbound: Dict[str, Extracted]
) -> List[Dict[str, Any]]:
    """The API requests the replies would become, with secrets from env() masked."""
    secrets = {os.environ[n]: f"${{{n}}}" for n in config.env_names() if os.environ.get(n)}
    requests: List[Dict[str, Any]] = []
    for reply in bot:
        message = {k: v for k, v in reply.items() if k != "recipient_id"}
        recipient = reply["recipient_id"]
        rendered, problems = config.outbound.render(message, recipient, inbound.get(recipient))
        requests += [{"problem": problem} for problem in problems]
        for request in rendered:
            sent_json = is_json(media_type_of(request.headers.get("Content-Type", "")))
            body = json.loads(request.body) if request.body and sent_json else None
            requests.append(
                {
                    "kind": request.kind,
                    "method": request.method,
                    "url": _mask(request.url, secrets),
                    "headers": {k: _mask(v, secrets) for k, v in request.headers.items()},
                    "body": body if body is not None else (request.body or b"").decode(),
                    "allowed": config.outbound.allows(request),
                }
            )
    return requests


def _mask(text: str, secrets: Dict[str, str]) -> str:
    for value, name in secrets.items():
        text = text.replace(value, name)
    return text


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


class CaseError(ValueError):
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
def _environment(variables: Dict[str, str]) -> Iterator[None]:
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
    with _environment(case.get("env", {})):
        if config.auth is not None:  # it reads its secrets when built: in this environment
            config = dataclasses.replace(config, auth=dataclasses.replace(config.auth))
        request = case_request(case, base_dir)
        result = simulate(config, request, case.get("replies"), case.get("time"))
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


def _why(result: Dict[str, Any]) -> str:
    error = result.get("error")
    return f" ({result['status']}: {error['error']})" if error else ""


def _differs(key: str, expected: Any, actual: Any) -> str:
    return f"{key}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
