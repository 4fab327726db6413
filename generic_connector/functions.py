"""JMESPath functions beyond the standard ones, for what real webhook payloads need.

``header()``, ``query()`` and ``body()`` read the request being mapped; the engine binds it
with ``bound_to()`` around each evaluation, which is synchronous, so no other request can
interleave. ``env()`` reads the environment; the names it is called with are known when the
mapping is compiled, so a missing variable stops start-up instead of failing a request.
"""

import contextvars
import functools
import json
import os
import re
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple

from jmespath import functions

from generic_connector.request import IncomingRequest

_request: "contextvars.ContextVar[Optional[IncomingRequest]]" = contextvars.ContextVar(
    "generic_connector_request", default=None
)
_body: "contextvars.ContextVar[Any]" = contextvars.ContextVar("generic_connector_body")


Binding = Tuple["contextvars.Token[Optional[IncomingRequest]]", "contextvars.Token[Any]"]


def bind(request: Optional[IncomingRequest], body: Any) -> Binding:
    """Make ``request`` and its decoded ``body`` what header(), query() and body() read,
    until ``unbind`` is called with what this returns."""
    return _request.set(request), _body.set(body)


def unbind(binding: Binding) -> None:
    _request.reset(binding[0])
    _body.reset(binding[1])


@contextmanager
def bound_to(request: Optional[IncomingRequest], body: Any) -> Iterator[None]:
    """``bind`` for the duration of a ``with`` block."""
    binding = bind(request, body)
    try:
        yield
    finally:
        unbind(binding)


class ConnectorFunctions(functions.Functions):
    """The standard functions plus the connector's own (documented in the README)."""

    @functions.signature({"types": ["string"]})
    def _func_header(self, name: str) -> Optional[str]:
        request = _request.get()
        return request.header(name) if request else None

    @functions.signature({"types": ["string"]})
    def _func_query(self, name: str) -> Optional[str]:
        request = _request.get()
        return request.query_param(name) if request else None

    @functions.signature()
    def _func_body(self) -> Any:
        return _body.get(None)

    @functions.signature({"types": ["string"]})
    def _func_env(self, name: str) -> Optional[str]:
        return os.environ.get(name)

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_env_or(self, name: str, default: str) -> str:
        return os.environ.get(name) or default

    @functions.signature({"types": ["string", "null"]})
    def _func_parse_json(self, text: Optional[str]) -> Any:
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    @functions.signature({"types": ["string"]})
    def _func_lower(self, text: str) -> str:
        return text.lower()

    @functions.signature({"types": ["string"]})
    def _func_upper(self, text: str) -> str:
        return text.upper()

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, text: str, separator: str) -> list:
        return text.split(separator)

    @functions.signature({"types": ["string"]})
    def _func_trim(self, text: str) -> str:
        return text.strip()

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_regex_replace(self, text: str, pattern: str, replacement: str) -> str:
        return _regex(pattern).sub(replacement, text)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> "re.Pattern[str]":
    return re.compile(pattern)


FUNCTIONS = ConnectorFunctions()
SIGNATURES: Dict[str, Any] = {
    name: spec["signature"] for name, spec in FUNCTIONS.FUNCTION_TABLE.items()
}

# Functions that read the request being mapped: only mappings using them pay for binding it.
REQUEST_FUNCTIONS = {"header", "query", "body"}
