"""Answers: a template over the bot's messages, written in the platform's content type.

How a result becomes bytes is chosen by name from a registry of formats (``json``, ``xml``,
``text``); by default from the content type. Knows nothing of HTTP frameworks: a template that
cannot be rendered raises ``RenderError``.
"""

import contextlib
import json
import re
from typing import Any, ClassVar, Dict, List, Mapping, NamedTuple, Optional, Type, Union
from xml.sax.saxutils import escape, quoteattr

from generic_connector.expressions import LITERALS, Expression, truthy
from generic_connector.functions import Scope
from generic_connector.request import dumps, is_json, media_type_of


class RenderError(Exception):
    """A template whose result cannot be written in its content type."""


class Rendered(NamedTuple):
    """An answer ready to send."""

    body: bytes
    content_type: str
    status: int
    headers: Mapping[str, str]


class AnswerFormat:
    """Writes a template's result as text; one subclass per format, registered by name."""

    name: ClassVar[str]

    @staticmethod
    def suits(media_type: str) -> bool:
        """Whether this format is the default for ``media_type``."""
        return False

    def write(self, result: Any) -> str:
        raise NotImplementedError


class JSONFormat(AnswerFormat):
    """The result as JSON: ``application/json`` and every ``*+json`` type."""

    name = "json"

    @staticmethod
    def suits(media_type: str) -> bool:
        return is_json(media_type)

    def write(self, result: Any) -> str:
        return dumps(result)


class XMLFormat(AnswerFormat):
    """An object with one root key as XML (Twilio's TwiML)."""

    name = "xml"

    @staticmethod
    def suits(media_type: str) -> bool:
        return media_type in ("application/xml", "text/xml") or media_type.endswith("+xml")

    def write(self, result: Any) -> str:
        return result if isinstance(result, str) else to_xml(result)


class TextFormat(AnswerFormat):
    """A string as it is; anything else as JSON; null as nothing."""

    name = "text"

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


class ResponseTemplate:
    """Shapes an HTTP answer: the ``response`` section, or a handshake's answer."""

    def __init__(
        self,
        body: str = "messages",
        content_type: str = "application/json",
        status: int = 200,
        headers: Optional[Dict[str, str]] = None,
        format: Optional[str] = None,
        when: Optional[str] = None,
    ) -> None:
        # In a list of answers: this one is chosen when ``when`` is true (or absent).
        self.when = Expression(when) if when else None
        self.body = Expression(body)
        self.content_type = content_type
        self.status = status
        self.headers = headers or {}
        self.format = format_for(content_type, format)
        # The default, Rasa's REST answer: the messages as they are, nothing to evaluate.
        self._messages_as_json = body == "messages" and isinstance(self.format, JSONFormat)
        # Whether answers depend on the bot's messages (a literal body does not).
        self.reads_messages = self.body.tree["type"] not in LITERALS
        # A literal body (Telegram's `{}`) is the same answer every time: rendered once.
        self._constant: Optional[Rendered] = None
        if not self.reads_messages:
            # Not valid in its format: each answer reports it, as for computed bodies.
            with contextlib.suppress(RenderError):
                self._constant = self._rendered(self.body.tree["value"])

    def render(
        self,
        messages: List[Dict[str, Any]],
        body: Any,
        sender_id: Any,
        scope: Optional[Scope] = None,
    ) -> Rendered:
        """Evaluate the body expression over ``{messages, request: body, sender}``.

        ``scope`` is what header(), query(), body() and env() read.
        """
        if self._constant is not None:
            return self._constant
        if self._messages_as_json:
            return self._rendered(messages)
        data = {"messages": messages, "request": body, "sender": sender_id}
        return self._rendered(self.body.search(data, scope))

    def _rendered(self, result: Any) -> Rendered:
        payload = self.format.write(result).encode("utf-8")
        return Rendered(payload, self.content_type, self.status, self.headers)

    def expressions(self) -> List[Expression]:
        return [self.body] + ([self.when] if self.when else [])


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

    def __init__(self, after: float, response: Optional[Dict[str, Any]] = None) -> None:
        self.after = after
        self.response = ResponseTemplate(**(response or {"body": "`{}`"}))


_XML_NAME = re.compile(r"^[A-Za-z_][\w.-]*$")


def to_xml(value: Any) -> str:
    """Serialise ``{Root: {Child: "text", "@attr": "v", Repeated: [...]}}`` as XML.

    Text and attribute values are escaped; null values and empty lists leave nothing.
    """
    if not isinstance(value, dict) or len(value) != 1:
        raise RenderError("the XML response template must give an object with one root key")
    return '<?xml version="1.0" encoding="UTF-8"?>' + "".join(
        _xml_element(name, content) for name, content in value.items()
    )


def _xml_element(name: str, content: Any) -> str:
    if not _XML_NAME.match(name):
        raise RenderError(f"{name!r} is not a valid XML element name")
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
