"""A channel's request handling without Rasa: the dry run and the mapping test cases.

Runs the same steps as the channel (decode, map, render) with sample bot replies standing in
for the assistant, so a mapping can be checked on a desk in milliseconds.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from generic_connector.config import ChannelConfig
from generic_connector.errors import HTTPError
from generic_connector.request import IncomingRequest, decode_body

MESSAGE_FIELDS = ("sender", "text", "input_channel", "metadata", "message_id")


def simulate(
    config: ChannelConfig, request: IncomingRequest, replies: Optional[List[Dict[str, Any]]] = None
) -> Dict[str, Any]:
    """What the channel would answer and hand to Rasa for ``request``.

    ``replies`` are the bot messages Rasa is assumed to produce (without ``recipient_id``).
    """
    try:
        body = decode_body(request)
        extracted = config.request.extract(body)
    except HTTPError as error:
        return {"status": error.status, "error": error.body(), "messages": []}
    message = {
        "sender": extracted.sender_id,
        "text": extracted.text,
        "input_channel": extracted.input_channel,
        "metadata": extracted.metadata,
        "message_id": extracted.message_id,
    }
    bot = [{"recipient_id": extracted.sender_id, **reply} for reply in replies or []]
    rendered = config.response.render(bot, body, extracted.sender_id)
    text = rendered.body.decode("utf-8")
    return {
        "status": rendered.status,
        "messages": [message],
        "response": {
            "content_type": rendered.content_type,
            "body": json.loads(text) if config.response.is_json else text,
        },
    }


class CaseError(ValueError):
    """A test case that cannot be run, e.g. because its body file is missing."""


def case_request(case: Dict[str, Any], base_dir: Path) -> IncomingRequest:
    """The request a test case describes; ``body_file`` is relative to ``base_dir``."""
    if "body_file" in case:
        path = base_dir / case["body_file"]
        try:
            raw = path.read_bytes()
        except OSError:
            raise CaseError(f"body file {case['body_file']!r} not found") from None
    elif isinstance(case["body"], str):
        raw = case["body"].encode("utf-8")
    else:
        raw = json.dumps(case["body"]).encode("utf-8")
    return IncomingRequest(raw, case.get("headers", {}), case.get("query", {}))


def run_case(config: ChannelConfig, case: Dict[str, Any], base_dir: Path) -> List[str]:
    """Run one test case; return what differs from its expectations (empty when it passes)."""
    result = simulate(config, case_request(case, base_dir), case.get("replies"))
    expect = case["expect"]
    failures = []
    if "status" in expect and expect["status"] != result["status"]:
        failures.append(_differs("status", expect["status"], result["status"], result))
    if "error" in expect:
        actual = result.get("error", {}).get("error", "")
        if expect["error"] not in actual:
            failures.append(
                f"error: expected a message containing {expect['error']!r}, got {actual!r}"
            )
    message_keys = [key for key in MESSAGE_FIELDS if key in expect]
    if message_keys and not result["messages"]:
        failures.append(
            f"expected a message for Rasa, but the request was rejected: {_why(result)}"
        )
    for key in message_keys if result["messages"] else ():
        actual = result["messages"][0][key]
        if actual != expect[key]:
            failures.append(_differs(key, expect[key], actual, result))
    if "response" in expect:
        actual = result.get("response", {}).get("body")
        if "response" not in result:
            failures.append(f"expected a response, but the request was rejected: {_why(result)}")
        elif actual != expect["response"]:
            failures.append(_differs("response", expect["response"], actual, result))
    return failures


def _why(result: Dict[str, Any]) -> str:
    return f"{result['status']} {result['error']['error']}" if "error" in result else ""


def _differs(key: str, expected: Any, actual: Any, result: Dict[str, Any]) -> str:
    text = f"{key}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
    why = _why(result)
    return f"{text} ({why})" if why and key == "status" else text
