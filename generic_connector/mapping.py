"""The mapping engine: JMESPath expressions compiled once, evaluated per request.

Knows nothing about Rasa or Sanic: it turns a decoded request body into the fields of a
user message, and the bot's messages into the body of the HTTP answer.
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.parser import ParsedResult

from generic_connector.errors import HTTPError

_OPTIONS = jmespath.Options()
_KNOWN_FUNCTIONS = set(jmespath.functions.Functions().FUNCTION_TABLE)


class ExpressionError(ValueError):
    """An expression that does not compile, with the parser's message."""


class Expression:
    """A compiled JMESPath expression that remembers its source text."""

    __slots__ = ("source", "_parsed")

    def __init__(self, source: str) -> None:
        self.source = source
        self._parsed = compile_expression(source)

    def search(self, data: Any) -> Any:
        """Evaluate the expression over ``data``."""
        return self._parsed.search(data, options=_OPTIONS)


def compile_expression(source: str) -> ParsedResult:
    """Parse ``source``; raise ExpressionError naming the problem and its column."""
    try:
        parsed = jmespath.compile(source)
    except jmespath_errors.IncompleteExpressionError:
        raise ExpressionError("the expression ends too early") from None
    except jmespath_errors.LexerError as error:
        raise ExpressionError(f"{error.message} at column {error.lexer_position + 1}") from None
    except jmespath_errors.ParseError as error:
        raise ExpressionError(f"{error.msg} at column {error.lex_position + 1}") from None
    unknown = sorted(_function_names(parsed.parsed) - _KNOWN_FUNCTIONS)
    if unknown:
        raise ExpressionError(f"unknown function {unknown[0]}()")
    return parsed


def _function_names(node: Dict[str, Any]) -> set:
    names = {node["value"]} if node.get("type") == "function_expression" else set()
    for child in node.get("children", ()):
        if isinstance(child, dict):
            names |= _function_names(child)
    return names


@dataclass(frozen=True)
class Extracted:
    """What a request maps to: the fields of one Rasa ``UserMessage``."""

    sender_id: str
    text: str
    input_channel: str
    metadata: Optional[Dict[str, Any]]
    message_id: Optional[str]


def json_type(value: Any) -> str:
    """How a decoded JSON/YAML value is named in messages: "a string", "a list", ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    names = {str: "a string", dict: "an object", list: "a list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _scalar(value: Any, field: str, expression: Expression) -> Optional[str]:
    """A string or number as text; None when the expression found nothing."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise HTTPError(
        422,
        f"{field} must be a string or a number, but `{expression.source}` gave {json_type(value)}",
        field=field,
        expression=expression.source,
    )


def _required(value: Any, field: str, expression: Expression) -> str:
    text = _scalar(value, field, expression)
    if text is None:
        raise HTTPError(
            422,
            f"no {field} in the request: `{expression.source}` found nothing",
            field=field,
            expression=expression.source,
        )
    return text


class RequestMapping:
    """Maps a request body to a user message: the ``request`` section of a channel."""

    def __init__(
        self,
        sender: str,
        text: str,
        default_input_channel: str,
        input_channel: Optional[str] = None,
        metadata: Optional[str] = None,
        message_id: Optional[str] = None,
    ) -> None:
        self.sender = Expression(sender)
        self.text = Expression(text)
        self.default_input_channel = default_input_channel
        self.input_channel = Expression(input_channel) if input_channel else None
        self.metadata = Expression(metadata) if metadata else None
        self.message_id = Expression(message_id) if message_id else None

    def extract(self, body: Any) -> Extracted:
        """Map one decoded body; raise HTTPError(422) when a required field is missing."""
        sender_id = _required(self.sender.search(body), "sender", self.sender)
        text = _required(self.text.search(body), "text", self.text)
        input_channel = None
        if self.input_channel:
            input_channel = _scalar(
                self.input_channel.search(body), "input_channel", self.input_channel
            )
        metadata = None
        if self.metadata:
            metadata = self.metadata.search(body)
            if metadata is not None and not isinstance(metadata, dict):
                raise HTTPError(
                    422,
                    f"metadata must be an object, but `{self.metadata.source}` "
                    f"gave {json_type(metadata)}",
                    field="metadata",
                    expression=self.metadata.source,
                )
        message_id = None
        if self.message_id:
            message_id = _scalar(self.message_id.search(body), "message_id", self.message_id)
        return Extracted(
            sender_id=sender_id,
            text=text,
            input_channel=input_channel or self.default_input_channel,
            metadata=metadata,
            message_id=message_id,
        )


@dataclass(frozen=True)
class Rendered:
    """A response ready to send."""

    body: bytes
    content_type: str
    status: int


class ResponseTemplate:
    """Shapes the bot's messages into the HTTP answer: the ``response`` section."""

    def __init__(
        self,
        body: str = "messages",
        content_type: str = "application/json",
        status: int = 200,
    ) -> None:
        self.body = Expression(body)
        self.content_type = content_type
        self.status = status
        media_type = content_type.split(";")[0].strip().lower()
        self.is_json = media_type == "application/json" or media_type.endswith("+json")

    def render(self, messages: List[Dict[str, Any]], request: Any, sender_id: str) -> Rendered:
        """Evaluate the body expression over ``{messages, request, sender}``."""
        result = self.body.search({"messages": messages, "request": request, "sender": sender_id})
        if self.is_json or not isinstance(result, str):
            payload = json.dumps(result, ensure_ascii=False)
        else:
            payload = result
        return Rendered(payload.encode("utf-8"), self.content_type, self.status)
