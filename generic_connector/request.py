"""An incoming webhook request, independent of the web framework, and its decoding."""

import json
from dataclasses import dataclass, field
from typing import Any, Dict

from generic_connector.errors import HTTPError


@dataclass(frozen=True)
class IncomingRequest:
    """What the channel needs of an HTTP request; built from Sanic's or from a test case."""

    body: bytes
    headers: Dict[str, str] = field(default_factory=dict)
    query: Dict[str, str] = field(default_factory=dict)


def decode_body(request: IncomingRequest) -> Dict[str, Any]:
    """The body as a JSON object; HTTPError(400) saying what is wrong otherwise."""
    try:
        body = json.loads(request.body)
    except ValueError as error:
        raise HTTPError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "request body must be a JSON object")
    return body
