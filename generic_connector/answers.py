"""Answers: a template over the bot's messages, written in the platform's content type.

How a result becomes bytes is chosen by name from a registry of formats (``json``, ``xml``,
``text``); by default from the content type. Headers are expressions over the same data as
the body. Knows nothing of HTTP frameworks: a template that cannot be rendered raises
``RenderError``.
"""

import contextlib
import json
import re
from typing import Any, ClassVar, Dict, List, Mapping, NamedTuple, Optional, Type, Union
from xml.parsers import expat

from generic_connector.errors import RenderError
from generic_connector.expressions import LITERALS, Expression, truthy
from generic_connector.functions import Scope
from generic_connector.logtext import get_logger
from generic_connector.outbound import HEADER_NAME
from generic_connector.request import dumps, is_json, media_type_of

logger = get_logger(__name__)


class Rendered(NamedTuple):
    """An answer ready to send."""

    body: bytes
    content_type: str
    status: int
    headers: Mapping[str, str]


class AnswerFormat:
    """Writes a template's result as text; one subclass per format, registered by name."""

    name: ClassVar[str]
    content_type: ClassVar[str]  # an answer's Content-Type when the template gives none

    @staticmethod
    def suits(media_type: str) -> bool:
        """Whether this format is the default for ``media_type``."""
        return False

    def write(self, result: Any) -> str:
        raise NotImplementedError


class JSONFormat(AnswerFormat):
    """The result as JSON: ``application/json`` and every ``*+json`` type."""

    name = "json"
    content_type = "application/json"

    @staticmethod
    def suits(media_type: str) -> bool:
        return is_json(media_type)

    def write(self, result: Any) -> str:
        return dumps(result)


class XMLFormat(AnswerFormat):
    """An object with one root key as XML (Twilio's TwiML); a string that is XML as it is."""

    name = "xml"
    content_type = "application/xml"

    @staticmethod
    def suits(media_type: str) -> bool:
        return media_type in ("application/xml", "text/xml") or media_type.endswith("+xml")

    def write(self, result: Any) -> str:
        return well_formed(result) if isinstance(result, str) else to_xml(result)


class TextFormat(AnswerFormat):
    """A string as it is; anything else as JSON; null as nothing."""

    name = "text"
    content_type = "text/plain; charset=utf-8"

    def write(self, result: Any) -> str:
        if result is None:
            return ""
        return result if isinstance(result, str) else dumps(result)


ANSWER_FORMATS: Dict[str, Type[AnswerFormat]] = {
    cls.name: cls for cls in (JSONFormat, XMLFormat, TextFormat)
}


def format_for(content_type: str, name: Optional[str] = None) -> AnswerFormat:
    """The format called ``name``, or the one that suits the content type (text otherwise)."""
    if name is not None:
        return ANSWER_FORMATS[name]()  # the schema allows only registered names
    media_type = media_type_of(content_type)
    for cls in ANSWER_FORMATS.values():
        if cls.suits(media_type):
            return cls()
    return TextFormat()


# Headers an answer template may not set, and why: the channel writes them itself, and a
# wrong one would break the answer's framing (Content-Length, Transfer-Encoding) or the
# connection.
RESERVED_HEADERS: Dict[str, str] = {
    "content-type": "the answer's Content-Type is response.content_type",
    "content-length": "the server sets it from the body",
    "transfer-encoding": "the server sets it from the body",
    "connection": "the server manages the connection",
    "keep-alive": "the server manages the connection",
    "upgrade": "the server manages the connection",
    "trailer": "the server sets it",
    "x-request-id": "every answer carries the request's id",
}
# What no header value may hold: the C0 controls but tab (CR and LF would end the header and
# start another, NUL ends it early in some clients), and DEL.
_NOT_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def header_name_problem(name: Any) -> Optional[str]:
    """Why ``name`` cannot be an answer header's name, or None: it must be an HTTP token
    (``HEADER_NAME``, as for outbound requests) and not one the channel sets itself."""
    if not isinstance(name, str) or not HEADER_NAME.match(name):
        return "not a valid header name"
    reserved = RESERVED_HEADERS.get(name.lower())
    return f"{name} cannot be set by an answer template: {reserved}" if reserved else None


def header_text(value: Any) -> Optional[str]:
    """A header expression's result as the header's value: a string as it is, a number, a
    boolean, a list or an object as JSON; None (the header is left out) for null."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def header_value_problem(text: str) -> Optional[str]:
    """Why ``text`` cannot be sent as a header value, or None. Says nothing of the value."""
    if _NOT_IN_HEADER.search(text):
        return "it holds a control character (CR, LF, NUL, ...)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "it holds text that is not valid Unicode (a lone surrogate)"
    return None


class ResponseTemplate:
    """Shapes an HTTP answer: the ``response`` section, or a handshake's answer.

    ``headers`` maps each header's name to an expression over ``{messages, request, sender}``,
    as ``body`` is: a fixed value is a literal (``'no-store'``). A header whose expression
    gives null is left out, and so is one whose value holds a control character or is not
    valid Unicode (logged, without the value): nothing from a request can add a header or
    split the answer.
    """

    def __init__(
        self,
        body: str = "messages",
        content_type: Optional[str] = None,
        status: int = 200,
        headers: Optional[Dict[str, str]] = None,
        format: Optional[str] = None,
        when: Optional[str] = None,
    ) -> None:
        # In a list of answers: this one is chosen when ``when`` is true (or absent).
        self.when = Expression(when) if when else None
        self.body = Expression(body)
        self.format = format_for(content_type or "application/json", format)
        # Without one, the format's own: ``format: xml`` answers application/xml.
        self.content_type = content_type or self.format.content_type
        self.status = status
        self.headers = {name: Expression(value) for name, value in (headers or {}).items()}
        # Literal headers (`'no-store'`, and none at all) are the same on every answer: their
        # values are worked out once; None when some header is computed.
        self._fixed_headers = _literal_headers(self.headers)
        # The default, Rasa's REST answer: the messages as they are, nothing to evaluate.
        self._messages_as_json = body == "messages" and isinstance(self.format, JSONFormat)
        # Whether answers depend on the bot's messages (a literal body and headers do not).
        self.reads_messages = self.body.tree["type"] not in LITERALS or self._fixed_headers is None
        # A literal body (Telegram's `{}`) with literal headers is the same answer every
        # time: rendered once.
        self._constant: Optional[Rendered] = None
        if self._fixed_headers is not None and not self.reads_messages:
            # Not valid in its format: each answer reports it, as for computed bodies.
            with contextlib.suppress(RenderError):
                self._constant = self._rendered(self.body.tree["value"], self._fixed_headers)

    def render(
        self,
        messages: List[Dict[str, Any]],
        body: Any,
        sender_id: Any,
        scope: Optional[Scope] = None,
    ) -> Rendered:
        """Evaluate the body and header expressions over ``{messages, request: body,
        sender}``.

        ``scope`` is what header(), query(), body() and env() read.
        """
        if self._constant is not None:
            return self._constant
        data: Optional[Dict[str, Any]] = None
        if self._messages_as_json:
            result: Any = messages
        else:
            data = {"messages": messages, "request": body, "sender": sender_id}
            result = self.body.search(data, scope)
        headers = self._fixed_headers
        if headers is None:
            if data is None:
                data = {"messages": messages, "request": body, "sender": sender_id}
            headers = self._header_values(data, scope)
        return self._rendered(result, headers)

    def _header_values(self, data: Dict[str, Any], scope: Optional[Scope]) -> Dict[str, str]:
        """Each header's value over ``data``; those that are null or cannot be sent are left
        out (the latter logged by name, never with the value)."""
        values = {}
        for name, expression in self.headers.items():
            text = header_text(expression.search(data, scope))
            if text is None:
                continue
            problem = header_value_problem(text)
            if problem is not None:
                logger.warning("The answer's header %s was left out: %s", name, problem)
                continue
            values[name] = text
        return values

    def _rendered(self, result: Any, headers: Mapping[str, str]) -> Rendered:
        payload = self.format.write(result).encode("utf-8")
        return Rendered(payload, self.content_type, self.status, headers)

    def expressions(self) -> List[Expression]:
        found = [self.body] + ([self.when] if self.when else [])
        return found + list(self.headers.values())


def _literal_headers(headers: Mapping[str, Expression]) -> Optional[Dict[str, str]]:
    """The values of headers that are all literals (ValueError for a name or a value that
    cannot be sent); None when some header is computed."""
    for name in headers:
        problem = header_name_problem(name)
        if problem is not None:
            raise ValueError(f"answer header {name!r}: {problem}")
    if any(e.tree["type"] not in LITERALS for e in headers.values()):
        return None
    values = {}
    for name, expression in headers.items():
        text = header_text(expression.tree["value"])
        problem = header_value_problem(text) if text is not None else None
        if problem is not None:
            raise ValueError(f"the header {name} cannot be sent: {problem}")
        if text is not None:
            values[name] = text
    return values


class ResponseChoice:
    """A ``response`` list: the first template whose ``when`` is true answers.

    A list lets the answer depend on the event: Viber's ``conversation_started`` answered with
    a welcome, its messages with nothing. ``when`` is evaluated over ``{messages, request,
    sender}``; a template without ``when`` always matches.
    """

    def __init__(self, templates: List[ResponseTemplate]) -> None:
        self.templates = templates
        # Whether answers depend on the bot's messages: replies of duplicates are kept then.
        self.reads_messages = any(t.reads_messages or t.when for t in templates)

    def render(
        self, messages: List[Dict[str, Any]], body: Any, sender_id: Any, scope: Optional[Scope]
    ) -> Rendered:
        data = {"messages": messages, "request": body, "sender": sender_id}
        for template in self.templates:
            if template.when is None or truthy(template.when.search(data, scope)):
                return template.render(messages, body, sender_id, scope)
        raise RenderError("no response template's `when` matched this request")

    def expressions(self) -> List[Expression]:
        return [e for template in self.templates for e in template.expressions()]


def build_response(
    section: Union[Dict[str, Any], List[Dict[str, Any]], None],
) -> Union[ResponseTemplate, ResponseChoice]:
    """The ``response`` section: one template, or a list of them chosen by ``when``."""
    specs = section if isinstance(section, list) else [section or {}]
    templates = [ResponseTemplate(**spec) for spec in specs]
    if len(templates) == 1 and templates[0].when is None:
        return templates[0]
    return ResponseChoice(templates)


class Deferral:
    """``defer``: when the assistant takes longer than ``after`` seconds, answer with this
    template at once and deliver the replies through ``outbound`` when they come (Discord's
    deferred answer and follow-up webhook, Slack's ``response_url``)."""

    def __init__(
        self, after: float, response: Optional[Dict[str, Any]] = None, when: Optional[str] = None
    ) -> None:
        self.after = after
        self.response = ResponseTemplate(**(response or {"body": "`{}`"}))
        # Over the request's body: only such requests are deferred (None: every request).
        self.when = Expression(when) if when else None

    def expressions(self) -> List[Expression]:
        return [*self.response.expressions(), *([self.when] if self.when is not None else [])]


# The names an answer's keys may give elements and attributes: XML names in ASCII, without
# the colon of namespace prefixes, which every parser reads alike. Keys come from request data
# too, so a key is checked whole: "a onclick" cannot add an attribute, "a><b" an element.
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
# What XML 1.0 allows nowhere, not even as a character reference: the C0 controls but tab,
# newline and carriage return, lone surrogates, U+FFFE and U+FFFF. Data holding them gets
# U+FFFD (the replacement character) in their place.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Text and attribute values read back as they were: markup characters as entities; carriage
# returns (which parsers turn into newlines), and in attribute values tabs and newlines (which
# parsers turn into spaces), as character references.
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;",
     "\r": "&#13;"}
)  # fmt: skip
# Namespaces that `xmlns` may not be bound to (namespace-aware parsers refuse the document).
_RESERVED_NAMESPACES = {"http://www.w3.org/XML/1998/namespace", "http://www.w3.org/2000/xmlns/"}
# Elements in elements (and lists in lists) deeper than this are refused, not recursed into.
MAX_XML_DEPTH = 100


def to_xml(value: Any) -> str:
    """Serialise ``{Root: {Child: "text", "@attr": "v", Repeated: [...]}}`` as XML.

    The result is well-formed whatever the data: text and attribute values are escaped,
    characters XML cannot hold become U+FFFD, and a key that is not an XML name (ASCII
    letters, digits, ``_.-``, not starting with a digit, ``.`` or ``-``) is a RenderError.
    Null values and empty lists leave nothing; a null root is an empty element.
    """
    if not isinstance(value, dict) or len(value) != 1:
        raise RenderError("the XML response template must give an object with one root key")
    ((name, content),) = value.items()
    if isinstance(content, list):
        raise RenderError(
            f"the XML root {_shown(name)} must be one element, not a list (an XML document "
            "has one root)"
        )
    parts = ['<?xml version="1.0" encoding="UTF-8"?>']
    _xml_element(name, {} if content is None else content, parts, 0)
    return "".join(parts)


def _xml_element(name: Any, content: Any, out: List[str], depth: int) -> None:
    if depth > MAX_XML_DEPTH:
        raise RenderError(f"the XML answer nests deeper than {MAX_XML_DEPTH} levels")
    if not _is_xml_name(name):
        raise RenderError(f"{_shown(name)} is not a valid XML element name")
    if content is None:
        return
    if isinstance(content, list):
        for item in content:
            _xml_element(name, item, out, depth + 1)
        return
    if not isinstance(content, dict):
        out.append(f"<{name}>{_xml_text(content).translate(_TEXT_ESCAPES)}</{name}>")
        return
    out.append(f"<{name}")
    for key, item in content.items():
        if isinstance(key, str) and key.startswith("@") and item is not None:
            out.append(f" {_attribute(key[1:], item)}")
    out.append(">")
    for key, item in content.items():
        if item is None or (isinstance(key, str) and key.startswith("@")):
            continue
        if key == "#text":
            out.append(_xml_text(item).translate(_TEXT_ESCAPES))
        else:
            _xml_element(key, item, out, depth + 1)
    out.append(f"</{name}>")


def _attribute(name: str, value: Any) -> str:
    if not _is_xml_name(name):
        raise RenderError(f"{_shown(name)} is not a valid XML attribute name")
    text = _xml_text(value)
    if name == "xmlns" and text in _RESERVED_NAMESPACES:
        raise RenderError(f"xmlns cannot be {text}: the namespace is reserved")
    return f'{name}="{text.translate(_ATTRIBUTE_ESCAPES)}"'


def _is_xml_name(name: Any) -> bool:
    return isinstance(name, str) and _XML_NAME.fullmatch(name) is not None


def _shown(name: Any) -> str:
    """A name from data in a message: quoted, and cut short."""
    return repr(name[:60] + "…" if isinstance(name, str) and len(name) > 60 else name)


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _NOT_XML_CHAR.sub("\ufffd", text)


def well_formed(text: str) -> str:
    """``text``, a template's string result, if it is a well-formed XML document without a
    DOCTYPE (whose entities could expand to gigabytes); a RenderError otherwise.

    Answers built from data are best written as objects: a string is checked, not escaped.
    """
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _no_doctype
    try:
        parser.Parse(text.encode("utf-8"), True)
    except expat.ExpatError as error:
        raise RenderError(
            f"the XML answer is a string that is not well-formed XML: {error}"
        ) from None
    except UnicodeEncodeError:
        raise RenderError("the XML answer is a string holding a lone surrogate") from None
    return text


def _no_doctype(*_: Any) -> None:
    raise RenderError("the XML answer is a string with a DOCTYPE, which answers may not hold")
