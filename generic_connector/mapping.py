"""The mapping engine: JMESPath expressions compiled once, evaluated per request.

Knows nothing about Rasa or Sanic: it turns a decoded request into the fields of user
messages, recognises events to ignore and handshakes to answer directly, and turns the bot's
messages into the body of the HTTP answer (JSON, text or XML).
"""

import contextlib
import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Set, Union
from xml.sax.saxutils import escape, quoteattr

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.parser import ParsedResult

from generic_connector.compiler import compile_expression_tree, compile_mapping, is_false
from generic_connector.errors import HTTPError
from generic_connector.functions import FUNCTIONS, REQUEST_FUNCTIONS, SIGNATURES, bound_to
from generic_connector.request import IncomingRequest, dumps, is_json, media_type_of

_LITERALS = {"literal", "raw_string"}
_PATHS = {"subexpression", "index_expression", "filter_projection", "projection"}
_JSON_TYPES = {str: "string", int: "number", float: "number", bool: "boolean", list: "array"}


class ExpressionError(ValueError):
    """An expression that does not compile or calls a function wrongly."""


class Expression:
    """A JMESPath expression, parsed and compiled to a Python function once."""

    __slots__ = ("source", "tree", "evaluate", "env_names", "reads_request")

    def __init__(self, source: str) -> None:
        self.source = source
        self.tree = tree = compile_expression(source).parsed
        # The compiled function itself, for hot paths that handle JMESPath errors themselves.
        self.evaluate = compile_expression_tree(tree, FUNCTIONS)
        self.env_names = env_names(tree)
        self.reads_request = bool(_function_names(tree) & REQUEST_FUNCTIONS)

    def search(self, data: Any) -> Any:
        """Evaluate over ``data``; a runtime type error is the request's fault (422)."""
        try:
            return self.evaluate(data)
        except jmespath_errors.JMESPathError as error:
            raise HTTPError(
                422, f"`{self.source}` failed on this request: {error}", expression=self.source
            ) from None


def compile_expression(source: str) -> ParsedResult:
    """Parse ``source`` and check its function calls; raise ExpressionError saying what is wrong."""
    try:
        parsed = jmespath.compile(source)
    except jmespath_errors.IncompleteExpressionError:
        raise ExpressionError("the expression ends too early") from None
    except jmespath_errors.LexerError as error:
        raise ExpressionError(f"{error.message} at column {error.lexer_position + 1}") from None
    except jmespath_errors.ParseError as error:
        raise ExpressionError(f"{error.msg} at column {error.lex_position + 1}") from None
    _check_calls(parsed.parsed)
    return parsed


def _check_calls(tree: Dict[str, Any]) -> None:
    """Unknown functions, wrong argument counts and literal arguments of the wrong type."""
    for node in nodes(tree):
        _check_node(node)


def _check_node(node: Dict[str, Any]) -> None:
    if node["type"] == "slice" and node["children"][2] == 0:
        raise ExpressionError("a slice step cannot be 0")
    if node["type"] in _PATHS and node["children"][0]["type"] == "not_expression":
        # jmespath reads `!a.b` as `(!a).b`: a field of true or false, always null.
        raise ExpressionError(
            "`!` negates only the name right after it, so what follows is looked up in true "
            "or false and gives null: write !(a.b) to negate a path"
        )
    if node["type"] == "function_expression":
        name, args = node["value"], node["children"]
        if name not in SIGNATURES:
            raise ExpressionError(f"unknown function {name}()")
        signature = SIGNATURES[name]
        variadic = bool(signature) and signature[-1].get("variadic")
        if len(args) != len(signature) and not (variadic and len(args) >= len(signature)):
            expected = f"{len(signature)}{' or more' if variadic else ''}"
            noun = "argument" if expected == "1" else "arguments"
            raise ExpressionError(f"{name}() takes {expected} {noun}, got {len(args)}")
        for position, (arg, spec) in enumerate(zip(args, signature), start=1):
            allowed = [t.split("-")[0] for t in spec.get("types", [])]
            if arg["type"] in _LITERALS and allowed:
                actual = _JSON_TYPES.get(type(arg["value"]), "object")
                if arg["value"] is None:
                    actual = "null"
                if actual not in allowed:
                    raise ExpressionError(
                        f"{name}() argument {position} must be {' or '.join(allowed)}, got {actual}"
                    )
        if name == "env" and args[0]["type"] not in _LITERALS:
            raise ExpressionError("env() takes the variable's name as a literal: env('NAME')")
        if name == "regex_replace":
            _check_pattern(args[1])


def _check_pattern(node: Dict[str, Any]) -> None:
    if node["type"] not in _LITERALS:
        raise ExpressionError("regex_replace() takes its pattern as a literal: 'pattern'")
    try:
        re.compile(node["value"])
    except re.error as error:
        raise ExpressionError(f"regex_replace() pattern is not a valid regex: {error}") from None


def nodes(tree: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """Every node of a parsed expression, the root first."""
    yield tree
    for child in tree.get("children", ()):
        if isinstance(child, dict):
            yield from nodes(child)


def _function_names(tree: Dict[str, Any]) -> Set[str]:
    return {node["value"] for node in nodes(tree) if node["type"] == "function_expression"}


def env_names(tree: Dict[str, Any]) -> Set[str]:
    """The environment variables an expression reads with env('NAME')."""
    return {
        node["children"][0]["value"]
        for node in nodes(tree)
        if node["type"] == "function_expression" and node["value"] == "env"
    }


def _optional(source: Optional[str]) -> Optional[Expression]:
    return Expression(source) if source else None


def json_type(value: Any) -> str:
    """How a decoded JSON/YAML value is named in messages: "a string", "a list", ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    names = {str: "a string", dict: "an object", list: "a list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class Extracted(NamedTuple):
    """What one event maps to: the fields of one Rasa ``UserMessage``, and the event."""

    sender_id: str
    text: str
    input_channel: str
    metadata: Optional[Dict[str, Any]]
    message_id: Optional[str]
    event: Any = None


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


@dataclass(frozen=True)
class IgnoreRule:
    """Events for which ``when`` is true are acknowledged but not sent to Rasa."""

    name: str
    when: Expression


class RequestMapping:
    """Maps a decoded request to user messages: the ``request`` section of a channel."""

    def __init__(
        self,
        sender: str,
        text: str,
        default_input_channel: str,
        input_channel: Optional[str] = None,
        metadata: Optional[str] = None,
        message_id: Optional[str] = None,
        events: Optional[str] = None,
        ignore: Optional[List[Dict[str, str]]] = None,
        format: str = "json",
    ) -> None:
        self.format = format
        self.events = _optional(events)
        self.ignore = [IgnoreRule(rule["name"], Expression(rule["when"])) for rule in ignore or []]
        self.sender = Expression(sender)
        self.text = Expression(text)
        self.default_input_channel = default_input_channel
        self.input_channel = _optional(input_channel)
        self.metadata = _optional(metadata)
        self.message_id = _optional(message_id)
        # One function per mapping: shared paths are looked up once per event.
        self._map = compile_mapping(
            [rule.when.tree for rule in self.ignore], self._trees(), FUNCTIONS
        )

    def select_events(self, body: Any) -> List[Any]:
        """The events in a request: the body itself, or what ``events`` selects.

        A list gives one event per item, an object is one event, null or nothing none;
        anything else is refused.
        """
        if self.events is None:
            return [body]
        selected = self.events.search(body)
        if selected is None:
            return []
        if isinstance(selected, dict):
            return [selected]
        if not isinstance(selected, list):
            raise HTTPError(
                422,
                f"`{self.events.source}` must select a list of events, got {json_type(selected)}",
                field="events",
                expression=self.events.source,
            )
        return selected

    def map(self, event: Any, ignore_rules: bool = True) -> Union[Extracted, IgnoreRule]:
        """Map one event, or give the first ignore rule that matches it.

        With ``ignore_rules=False``, what the event maps to whatever the rules say. Raise
        HTTPError(422) when a required field is missing or an expression fails.
        """
        try:
            found = self._map(event) if ignore_rules else self._fields(event)
        except jmespath_errors.JMESPathError:
            rules = [rule.when for rule in self.ignore] if ignore_rules else []
            for expression in filter(None, rules + self._field_expressions()):
                expression.search(event)  # raises the 422 that names the failing expression
            raise
        if type(found) is int:
            return self.ignore[found]
        sender_id, text, input_channel, metadata, message_id = found
        # Strings and ids that are numbers are the common cases; check everything else.
        if type(sender_id) is int:
            sender_id = str(sender_id)
        elif type(sender_id) is not str or not sender_id:
            sender_id = _required(sender_id, "sender", self.sender)
        if type(text) is not str or not text:
            text = _required(text, "text", self.text)
        if input_channel is not None:
            input_channel = _scalar(input_channel, "input_channel", self.input_channel)
        if metadata is not None and type(metadata) is not dict:
            raise HTTPError(
                422,
                f"metadata must be an object, but `{self.metadata.source}` "
                f"gave {json_type(metadata)}",
                field="metadata",
                expression=self.metadata.source,
            )
        if type(message_id) is int:
            message_id = str(message_id)
        elif message_id is not None:
            message_id = _scalar(message_id, "message_id", self.message_id)
        channel = input_channel or self.default_input_channel
        return _new_extracted((sender_id, text, channel, metadata, message_id, event))

    @functools.cached_property
    def _fields(self) -> Callable[[Any], Any]:
        """The fields without the rules; only ``map(..., ignore_rules=False)`` needs it."""
        return compile_mapping([], self._trees(), FUNCTIONS)

    def _trees(self) -> List[Optional[Dict[str, Any]]]:
        return [field.tree if field else None for field in self._field_expressions()]

    def _field_expressions(self) -> List[Optional[Expression]]:
        """The fields in the order the compiled functions return them."""
        return [self.sender, self.text, self.input_channel, self.metadata, self.message_id]

    def expressions(self) -> List[Expression]:
        """Every expression, in the order an event meets them: events, rules, fields."""
        found = [self.events] + [rule.when for rule in self.ignore] + self._field_expressions()
        return [e for e in found if e is not None]


def _truthy(value: Any) -> bool:
    return not is_false(value)


class Rendered(NamedTuple):
    """A response ready to send."""

    body: bytes
    content_type: str
    status: int
    headers: Mapping[str, str]


class ResponseTemplate:
    """Shapes an HTTP answer: the ``response`` section, or a handshake's answer."""

    def __init__(
        self,
        body: str = "messages",
        content_type: str = "application/json",
        status: int = 200,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        self.body = Expression(body)
        self.content_type = content_type
        self.status = status
        self.headers = headers or {}
        media_type = media_type_of(content_type)
        self.is_json = is_json(media_type)
        self.is_xml = media_type in ("application/xml", "text/xml") or media_type.endswith("+xml")
        self._messages_as_json = body == "messages" and self.is_json
        # A literal body (Telegram's `{}`) is the same answer every time: render it once.
        self._constant: Optional[Rendered] = None
        # Whether answers depend on the bot's messages (a literal body does not).
        self.reads_messages = self.body.tree["type"] not in _LITERALS
        if not self.reads_messages:
            # Not valid XML: each answer reports it, as for computed bodies.
            with contextlib.suppress(HTTPError):
                self._constant = self._rendered(self.body.tree["value"])

    def render(
        self,
        messages: List[Dict[str, Any]],
        body: Any,
        sender_id: Any,
        request: Optional[IncomingRequest] = None,
    ) -> Rendered:
        """Evaluate the body expression over ``{messages, request: body, sender}``.

        ``request`` is what header(), query() and body() read, if the expression calls them
        (handshakes are answered while ``receive`` has bound it already).
        """
        if self._constant is not None:
            return self._constant
        if self._messages_as_json:  # the default, Rasa's REST answer: nothing to evaluate
            payload = dumps(messages).encode("utf-8")
            return _new_rendered((payload, self.content_type, self.status, self.headers))
        scope = {"messages": messages, "request": body, "sender": sender_id}
        if request is not None and self.body.reads_request:
            with bound_to(request, body):
                return self._rendered(self.body.search(scope))
        return self._rendered(self.body.search(scope))

    def _rendered(self, result: Any) -> Rendered:
        if self.is_json:
            payload = dumps(result)
        elif self.is_xml and not isinstance(result, str):
            payload = to_xml(result)
        elif result is None:
            payload = ""
        else:
            payload = result if isinstance(result, str) else dumps(result)
        return _new_rendered(
            (payload.encode("utf-8"), self.content_type, self.status, self.headers)
        )


# Extracted(...) and Rendered(...) without the Python-level __new__ of a NamedTuple: these
# are built on every request.
_new_extracted = functools.partial(tuple.__new__, Extracted)
_new_rendered = functools.partial(tuple.__new__, Rendered)


@dataclass(frozen=True)
class Handshake:
    """A request answered from a template without Rasa (verification challenges)."""

    name: str
    method: str
    path: str
    when: Optional[Expression]
    verify: Optional[Expression]
    response: ResponseTemplate

    def matches(self, method: str, path: str, body: Any) -> bool:
        if (method, path) != (self.method, self.path):
            return False
        return self.when is None or _truthy(self.when.search(body))

    def answer(self, body: Any) -> Rendered:
        """The handshake's answer; 403 with nothing echoed when ``verify`` is false."""
        if self.verify is not None and not _truthy(self.verify.search(body)):
            raise HTTPError(403, "verification failed")
        return self.response.render([], body, None)

    def expressions(self) -> List[Expression]:
        found = [self.when, self.verify, self.response.body]
        return [e for e in found if e is not None]


_XML_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


def to_xml(value: Any) -> str:
    """Serialise ``{Root: {Child: "text", "@attr": "v", Repeated: [...]}}`` as XML.

    Text and attribute values are escaped; null values and empty lists leave nothing.
    """
    if not isinstance(value, dict) or len(value) != 1:
        raise HTTPError(500, "the XML response template must give an object with one root key")
    return '<?xml version="1.0" encoding="UTF-8"?>' + "".join(
        _xml_element(name, content) for name, content in value.items()
    )


def _xml_element(name: str, content: Any) -> str:
    if not _XML_NAME.match(name):
        raise HTTPError(500, f"{name!r} is not a valid XML element name")
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(_xml_element(name, item) for item in content)
    if not isinstance(content, dict):
        return f"<{name}>{escape(_xml_text(content))}</{name}>"
    attributes = "".join(
        f" {key[1:]}={quoteattr(_xml_text(v))}"
        for key, v in content.items()
        if key.startswith("@") and v is not None
    )
    children = "".join(
        escape(_xml_text(v)) if key == "#text" else _xml_element(key, v)
        for key, v in content.items()
        if not key.startswith("@") and v is not None
    )
    return f"<{name}{attributes}>{children}</{name}>"


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
