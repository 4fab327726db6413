"""Outbound requests: the bot's messages become HTTP requests to the platform's API.

Two ways, chosen by the mapping:

- **per message kind** (``text``, ``buttons``, ``custom``, ``image``, ``attachment``,
  ``elements``): each part of a bot message is a request of its own, from a template over
  ``{message, recipient, event, metadata}``, in the order Rasa's own channels send the parts;
- **per turn** (``turn``): one request for all the bot messages answering one user message, from
  a template over ``{messages, recipient, event, metadata}`` (LINE's reply API).

A template may have ``steps``: requests sent before its own, each named, whose JSON answers the
templates after them read as ``steps.<name>`` (upload an image, then send a message with the
upload's id). The first step is rendered with the reply; each later one once the step before
it has succeeded, from the ``Chain`` its request carries (stored with it on a shared store).

Message kinds and body formats are registries: a small class per name, with its schema
fragment; a name that is not registered is a configuration error. Templates are compiled at
start-up like every other expression. This module only renders requests; ``delivery`` sends
them.
"""

import json
import re
from dataclasses import dataclass, field, replace
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
)
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

from generic_connector import defaults as default
from generic_connector.errors import GenericConnectorError, RenderError
from generic_connector.expressions import EvaluationError, Expression, json_type
from generic_connector.functions import Scope
from generic_connector.limits import Rate, batches

if TYPE_CHECKING:
    from generic_connector.mapping import Extracted

Message = Mapping[str, Any]

TEMPLATE_SCHEMA = {"$ref": "#/definitions/outbound_request"}
STEP_NAME_SCHEMA = {
    "type": "string",
    "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
    "description": "The step's answer is steps.<name> in the templates after it.",
}


@dataclass(frozen=True)
class Chain:
    """What a step's request carries to render the request after it: the template (by kind),
    the position of the next request (``len(steps)``: the template's own), the name this
    step's answer is kept under, the context the reply was rendered over, and the answers of
    the steps before. All of it JSON, so that a shared store keeps it with the request."""

    kind: str
    next: int
    name: str
    context: Dict[str, Any]
    answers: Dict[str, Any]

    def stored(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "next": self.next,
            "name": self.name,
            "context": self.context,
            "answers": self.answers,
        }

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> "Chain":
        return cls(
            stored["kind"], stored["next"], stored["name"], stored["context"], stored["answers"]
        )


@dataclass(frozen=True)
class OutboundRequest:
    """One HTTP request to the platform's API, ready to send.

    URLs and headers carry secrets: they are left out of ``repr`` so that no log line shows them.
    """

    kind: str
    method: str
    url: str = field(repr=False)
    headers: Dict[str, str] = field(repr=False)
    body: Optional[bytes] = field(repr=False)
    # ``success``: an expression over the platform's 2xx answer that must be true (an API that
    # answers 200 with ``"is_sent": false``); None: any 2xx is a delivery.
    success: Optional[str] = None
    # A step of a chain: its answer is read and the next request rendered from it.
    then: Optional[Chain] = field(default=None, repr=False)

    @property
    def host(self) -> str:
        try:
            return urlsplit(self.url).hostname or ""
        except ValueError:  # an invalid IPv6 address
            return ""

    @property
    def port(self) -> Optional[int]:
        """The port the request goes to (the scheme's default when the URL names none)."""
        return url_port(self.url)

    @property
    def subject(self) -> str:
        """What log lines call what this request delivers: ``a text message``."""
        if self.kind == TURN:
            return "the replies of a turn"
        return a_message(self.kind)


def a_message(kind: str) -> str:
    """What log lines call a message of a kind: ``a text message``, ``an image message``."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} message"


# Message kinds ---------------------------------------------------------------------------------


class MessageKind:
    """A part of a Rasa bot message with a template of its own; one subclass per kind.

    ``OUTBOUND_KINDS`` holds them in the order Rasa's own channels send a message's parts.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # The kind whose template renders this one when the mapping has none for it.
    fallback: ClassVar[Optional[str]] = None

    @staticmethod
    def carries(message: Message) -> bool:
        """Whether a bot message has this part."""
        raise NotImplementedError

    @classmethod
    def schema(cls) -> Dict[str, Any]:
        """The kind's key in the schema's ``outbound`` section."""
        return {"description": cls.description, **TEMPLATE_SCHEMA}


OUTBOUND_KINDS: Dict[str, Type[MessageKind]] = {}


def register_kind(cls: Type[MessageKind]) -> Type[MessageKind]:
    """Add a message kind; parts are rendered in the order kinds are registered."""
    OUTBOUND_KINDS[cls.name] = cls
    return cls


def _has_buttons(message: Message) -> bool:
    return bool(message.get("buttons") or message.get("quick_replies"))


@register_kind
class TextKind(MessageKind):
    name = "text"
    description = "A bot message's text (when it has no buttons or quick replies)."

    @staticmethod
    def carries(message: Message) -> bool:
        return bool(message.get("text")) and not _has_buttons(message)


@register_kind
class ButtonsKind(MessageKind):
    name = "buttons"
    description = (
        "A text with buttons or quick replies (message.buttons, message.quick_replies); "
        "without this template the text template sends the text alone."
    )
    fallback = "text"

    @staticmethod
    def carries(message: Message) -> bool:
        return _has_buttons(message)


@register_kind
class CustomKind(MessageKind):
    name = "custom"
    description = "A domain json_message (message.custom)."

    @staticmethod
    def carries(message: Message) -> bool:
        return bool(message.get("custom"))


@register_kind
class ImageKind(MessageKind):
    name = "image"
    description = "An image URL (message.image)."

    @staticmethod
    def carries(message: Message) -> bool:
        return bool(message.get("image"))


@register_kind
class AttachmentKind(MessageKind):
    name = "attachment"
    description = "An attachment (message.attachment)."

    @staticmethod
    def carries(message: Message) -> bool:
        return bool(message.get("attachment"))


@register_kind
class ElementsKind(MessageKind):
    name = "elements"
    description = "A carousel (message.elements: title, subtitle, image_url, buttons)."

    @staticmethod
    def carries(message: Message) -> bool:
        return bool(message.get("elements"))


KINDS = tuple(OUTBOUND_KINDS)  # the names, for the config loader
TURN = "turn"
TURN_SCHEMA = {
    "description": (
        "One request for all the bot messages answering one user message, over "
        "{messages, recipient, event, metadata}; replaces the per-message templates."
    ),
    **TEMPLATE_SCHEMA,
}
PRESENCE = "presence"
PRESENCE_SCHEMA = {
    "description": (
        "A request sent when a user message reaches the channel, before the assistant answers "
        "(a typing indicator, a read receipt), over {message, recipient, event, metadata, "
        "reply_to}: one attempt, in the background; it never delays or fails the reply."
    ),
    **TEMPLATE_SCHEMA,
}
# The delivery policy: every other key of the section is a template.
OPTIONS: Tuple[str, ...] = (
    "wait", "timeout", "retries", "backoff", "max_backoff", "allow_hosts", "renders", "numbered",
)  # fmt: skip
# Platform limits (``limits.py``): texts split, a turn's messages batched, requests spaced.
OPTIONS += ("max_text", "max_messages_per_request", "rate")


# Body formats ----------------------------------------------------------------------------------


class BodyFormat:
    """How a body template's result becomes bytes; one subclass per ``content_type`` name."""

    name: ClassVar[str]
    media_type: ClassVar[str]
    description: ClassVar[str]

    def encode(self, payload: Any) -> bytes:
        raise NotImplementedError


BODY_FORMATS: Dict[str, Type[BodyFormat]] = {}


def register_body_format(cls: Type[BodyFormat]) -> Type[BodyFormat]:
    BODY_FORMATS[cls.name] = cls
    return cls


@register_body_format
class JSONBody(BodyFormat):
    name = "json"
    media_type = "application/json"
    description = "JSON, null members left out"

    def encode(self, payload: Any) -> bytes:
        return json.dumps(_without_nulls(payload), ensure_ascii=False).encode("utf-8")


@register_body_format
class FormBody(BodyFormat):
    name = "form"
    media_type = "application/x-www-form-urlencoded"
    description = "form fields from an object; values that are not strings as JSON, nulls left out"

    def encode(self, payload: Any) -> bytes:
        if not isinstance(payload, dict):
            raise RenderError(f"a form body must be an object, got {json_type(payload)}")
        fields = [
            (k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in payload.items()
            if v is not None
        ]
        return urlencode(fields).encode("utf-8")


def body_format_schema() -> Dict[str, Any]:
    """The ``content_type`` key of a template in the schema."""
    described = "; ".join(f"{name}: {cls.description}" for name, cls in BODY_FORMATS.items())
    return {
        "enum": list(BODY_FORMATS),
        "description": f"How the body is written (default json). {described}.",
    }


def template_schemas() -> Dict[str, Any]:
    """The template keys of the schema's ``outbound`` section: every kind, and ``turn``."""
    kinds = {name: kind.schema() for name, kind in OUTBOUND_KINDS.items()}
    return {**kinds, TURN: TURN_SCHEMA, PRESENCE: PRESENCE_SCHEMA}


# Templates -------------------------------------------------------------------------------------

# RFC 9110 field names; values must not hold line breaks (or NUL), which would split the request.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_LINE_BREAKS = re.compile(r"[\r\n\x00]")


# URLs: what a rendered URL may be, and allow_hosts ---------------------------------------------
# (shared with ``request.fetch``: both send request data to a platform's API with its token)

DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROLS = re.compile(r"[\x00-\x20\x7f]")
_DOT_SEGMENTS = {".", ".."}


class URLRefused(GenericConnectorError, ValueError):
    """A rendered URL that must not be requested; the message says why, without the URL."""


def checked_url(url: Any) -> str:
    """``url`` if it is an http(s) URL safe to request, else URLRefused saying why.

    Refused: what is not a string; spaces and control characters; what does not parse (Python
    refuses a host holding characters that NFKC turns into ``/?#@:``, such as ``＠``); a host
    that is not plain ASCII (full-width ``ａpi.telegram.org`` would reach ``api.telegram.org``
    once IDNA-encoded: IDN hosts must be written in punycode); a port that is no number of
    0-65535; and a path with a ``.`` or ``..`` segment once percent-decoded (``%2e%2e``, also
    decoded twice, and with ``\\`` counted as a separator), so that request data put in a path
    (``join('', [base, '/messages/', event.id])``) cannot walk out of it. A platform's API URL
    never needs such a segment.
    """
    if not isinstance(url, str):
        raise URLRefused(f"{json_type(url)}, not an http(s) URL")
    if _CONTROLS.search(url):
        raise URLRefused("a URL with spaces or control characters")
    parts = _split(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise URLRefused("no http(s) URL with a host")
    if not parts.hostname.isascii():
        raise URLRefused("a host that is not plain ASCII (write IDN hosts in punycode)")
    if _has_dot_segment(parts.path):
        raise URLRefused("a path with a '.' or '..' segment")
    return url


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is no number of 0-65535)
    except ValueError:
        raise URLRefused("an invalid URL (a malformed host or port)") from None
    return parts


def _has_dot_segment(path: str) -> bool:
    for _ in range(3):  # %252e%252e is %2e%2e once decoded, .. twice
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    return any(segment in _DOT_SEGMENTS for segment in re.split(r"[/\\]", path))


def url_port(url: str) -> Optional[int]:
    """The port ``url`` goes to: the one it names, else its scheme's default; None if invalid."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    return port if port is not None else DEFAULT_PORTS.get(parts.scheme)


class HostAllowList:
    """``allow_hosts``: the hosts, each on one port, that requests may go to.

    An entry ``api.telegram.org`` allows that host on the URL scheme's default port only (443
    for https, 80 for http); ``host:port`` allows exactly that port, so a local stand-in is
    ``127.0.0.1:8080``. IPv6 literals are written ``[::1]`` or ``[::1]:8080`` (a bare ``::1``
    is the default port). Case does not matter. A request to an allowed host on any other port
    is refused: a bot token must not go to whatever else listens on that machine.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = [str(entry) for entry in entries]
        self._allowed = {_allowed_entry(entry) for entry in self.entries}

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return False
        default = DEFAULT_PORTS.get(parts.scheme)
        port = default if port is None else port
        return (host, port) in self._allowed or (port == default and (host, None) in self._allowed)

    def __repr__(self) -> str:
        return f"HostAllowList({self.entries!r})"


def _allowed_entry(entry: str) -> Tuple[str, Optional[int]]:
    """``(host, port)`` of an allow_hosts entry; port None: the scheme's default."""
    text = entry.strip().lower()
    if "*" in text:  # it would never match: every host is named in full
        raise ValueError(f"{entry!r} is a pattern; name each host in full (no wildcards)")
    if text.count(":") > 1 and not text.startswith("["):
        return text, None  # a bare IPv6 literal
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or parts.netloc != text or "@" in text:
        raise ValueError(f"allow_hosts: {entry!r} is not a host or host:port")
    return host, port


class RequestTemplate:
    """How one kind of bot message (or a turn's messages) becomes a request."""

    def __init__(
        self,
        kind: str,
        url: str,
        method: str = "POST",
        headers: Optional[Dict[str, str]] = None,
        body: Optional[str] = None,
        content_type: str = "json",
        success: Optional[str] = None,
        steps: Optional[List[Dict[str, Any]]] = None,
        name: Optional[str] = None,
    ) -> None:
        if content_type not in BODY_FORMATS:
            known = ", ".join(BODY_FORMATS)
            raise ValueError(f"unknown outbound content_type {content_type!r} (known: {known})")
        bad = [name for name in headers or {} if not HEADER_NAME.match(name)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a valid header name")
        self.kind = kind
        self.name = name  # a step's
        self.where = f"outbound.{kind}"
        self.method = method
        self.url = Expression(url)
        self.headers = {name: Expression(value) for name, value in (headers or {}).items()}
        self.body = Expression(body) if body else None
        self.content_type = content_type
        self.format = BODY_FORMATS[content_type]()
        self.success = Expression(success) if success else None
        self.steps = [RequestTemplate(kind, **step) for step in steps or []]
        names = [step.name for step in self.steps]
        for index, step in enumerate(self.steps):
            step.where = f"{self.where}.steps[{index}]"
            if names.count(step.name) > 1:
                raise ValueError(f"outbound.{kind}: step {step.name!r} is declared twice")

    def expressions(self) -> List[Expression]:
        found = [self.url, *self.headers.values()]
        found += [e for step in self.steps for e in step.expressions()]
        return found + [e for e in (self.body, self.success) if e is not None]

    def render_chain(
        self,
        context: Dict[str, Any],
        scope: Optional[Scope] = None,
        position: int = 0,
        answers: Optional[Dict[str, Any]] = None,
        check_url: bool = True,
    ) -> OutboundRequest:
        """The request at ``position`` of the chain (the steps, then this template's own),
        over ``context`` with the earlier steps' ``answers`` as ``steps``; a step's request
        carries the ``Chain`` to render the one after it."""
        answers = answers or {}
        seen = {**context, "steps": answers} if self.steps else context
        if position >= len(self.steps):
            return self.render(seen, scope, check_url)
        step = self.steps[position]
        request = step.render(seen, scope, check_url)
        chain = Chain(self.kind, position + 1, step.name or "", context, answers)
        return replace(request, then=chain)

    def render(
        self, context: Dict[str, Any], scope: Optional[Scope] = None, check_url: bool = True
    ) -> OutboundRequest:
        """The request for ``context``; RenderError or EvaluationError when there is none.

        Error messages name the template's keys, never the values they gave (secrets).
        ``check_url=False`` takes the URL as it comes, unchecked: for the dry run, which
        shows environment variables by name (``${API_URL}/send`` is no URL), never to send.
        """
        url = self.url.search(context, scope)
        url = self._url(url) if check_url else str(url)
        headers = {}
        for name, expression in self.headers.items():
            value = expression.search(context, scope)
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if _LINE_BREAKS.search(text):
                raise RenderError(
                    f"{self.where}.headers.{name} gave a value with a line break (CR or LF)"
                )
            headers[name] = text
        body = None
        if self.body is not None:
            body = self.format.encode(self.body.search(context, scope))
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = self.format.media_type
        success = self.success.source if self.success is not None else None
        return OutboundRequest(self.kind, self.method, url, headers, body, success)

    def _url(self, url: Any) -> str:
        try:
            return checked_url(url)
        except URLRefused as refused:
            raise RenderError(f"{self.where}.url gave {refused}") from None


def _without_nulls(value: Any) -> Any:
    """Drop null members: optional API fields (thread_ts, caption) are better absent."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def merge_defaults(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> Dict[str, Any]:
    """``outbound.defaults`` under a template: objects merged recursively, the template's keys
    win (so ``headers`` add to the default headers)."""
    merged = dict(defaults)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_defaults(base, value)
        else:
            merged[key] = value
    return merged


# The section -----------------------------------------------------------------------------------


class Outbound:
    """The ``outbound`` section: the templates and the delivery policy."""

    def __init__(
        self,
        templates: Dict[str, RequestTemplate],
        wait: bool = False,
        timeout: float = default.OUTBOUND_TIMEOUT,
        retries: int = default.OUTBOUND_RETRIES,
        backoff: float = default.OUTBOUND_BACKOFF,
        max_backoff: float = default.OUTBOUND_MAX_BACKOFF,
        allow_hosts: Optional[List[str]] = None,
        turn: Optional[RequestTemplate] = None,
        renders: Optional[List[str]] = None,
        numbered: str = default.NUMBERED,
        max_text: Optional[int] = None,
        max_messages_per_request: Optional[int] = None,
        rate: Optional[Mapping[str, float]] = None,
        presence: Optional[RequestTemplate] = None,
    ) -> None:
        unknown = [kind for kind in templates if kind not in OUTBOUND_KINDS]
        if unknown:
            known = ", ".join(OUTBOUND_KINDS)
            raise ValueError(f"unknown outbound message kind {unknown[0]!r} (known: {known})")
        if turn is not None and templates:
            raise ValueError(
                "outbound.turn replaces the per-message templates; give one or the other"
            )
        self.templates = templates
        self.turn = turn
        self.presence = presence  # sent when a turn starts (``presence.py``)
        self.wait = wait
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.allow_hosts = HostAllowList(allow_hosts) if allow_hosts else None
        self.max_text = max_text  # longer texts become several messages (pipeline.deliver)
        self.max_messages_per_request = max_messages_per_request  # of a turn
        self.rate = Rate(**rate) if rate else None
        # Seconds between two requests of one conversation (0: not spaced).
        self.spacing = self.rate.spacing if self.rate else 0.0
        # The kinds the platform shows (None: every kind with a template, nothing falls back),
        # and the line of a button turned into text (``fallback``).
        self.renders = frozenset(renders) if renders is not None else None
        self.numbered = numbered

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "Outbound":
        """From a validated section; a key that is no option, kind or ``turn`` is refused."""
        defaults = section.get("defaults") or {}
        named = (*OPTIONS, *OUTBOUND_KINDS, TURN, PRESENCE, "defaults")
        unknown = [k for k in section if k not in named]
        if unknown:
            known = ", ".join(OUTBOUND_KINDS)
            raise ValueError(f"unknown outbound key {unknown[0]!r} (message kinds: {known})")

        def template(name: str) -> RequestTemplate:
            merged = merge_defaults(defaults, section[name] or {})
            step_defaults = {key: value for key, value in defaults.items() if key != "steps"}
            if merged.get("steps"):  # steps call the same API: the defaults apply to them too
                merged["steps"] = [merge_defaults(step_defaults, s) for s in merged["steps"]]
            return RequestTemplate(name, **merged)

        templates = {kind: template(kind) for kind in OUTBOUND_KINDS if kind in section}
        turn = template(TURN) if TURN in section else None
        presence = template(PRESENCE) if PRESENCE in section else None
        options = {key: section[key] for key in OPTIONS if key in section}
        return cls(templates, turn=turn, presence=presence, **options)

    def expressions(self) -> List[Expression]:
        extra = [t for t in (self.turn, self.presence) if t is not None]
        templates = [*self.templates.values(), *extra]
        return [e for template in templates for e in template.expressions()]

    def allows(self, request: OutboundRequest) -> bool:
        """Whether ``request`` may be sent: its host and port are in allow_hosts, if given."""
        return self.allow_hosts is None or self.allow_hosts.allows(request.url)

    def render_replies(
        self,
        replies: List[Dict[str, Any]],
        recipient: str,
        source: Optional["Extracted"],
        scope: Optional[Scope] = None,
        reply_to: Optional[Dict[str, Any]] = None,
    ) -> Tuple[List[OutboundRequest], List[str]]:
        """All the requests for the bot messages answering one user message, in order, and the
        problems of what could not be rendered (for the log, with the conversation id).

        ``source`` is the user message the replies answer (None for messages Rasa sends on its
        own): its event and metadata are what the templates see as ``event`` and ``metadata``.
        ``reply_to`` is where the conversation is (``{user, conversation, thread}``: the
        source's, or the one remembered for messages Rasa sends on its own).
        ``scope`` is what header(), query(), body() and env() read.
        """
        event = source.event if source is not None else None
        metadata = source.metadata if source is not None else None
        if reply_to is None and source is not None:
            reply_to = source.reply_to
        if self.turn is not None:
            if not replies:
                return [], []
            turns: List[OutboundRequest] = []
            failed: List[str] = []
            # At most max_messages_per_request messages a request; ``batch`` counts from 0.
            for batch, messages in enumerate(batches(replies, self.max_messages_per_request)):
                context = {
                    "messages": messages,
                    "recipient": recipient,
                    "event": event,
                    "metadata": metadata,
                    "reply_to": reply_to,
                    "batch": batch,
                }
                try:
                    turns.append(self.render_template(self.turn, context, scope))
                except (RenderError, EvaluationError) as error:
                    failed.append(f"the replies of a turn: {error}; not sent")
            return turns, failed
        requests: List[OutboundRequest] = []
        problems: List[str] = []
        for message in replies:
            context = {
                "message": message,
                "recipient": recipient,
                "event": event,
                "metadata": metadata,
                "reply_to": reply_to,
            }
            for kind in OUTBOUND_KINDS.values():
                if not kind.carries(message):
                    continue
                template = self.templates.get(kind.name)
                if template is None and kind.fallback is not None:
                    template = self.templates.get(kind.fallback)
                if template is None:
                    problems.append(
                        f"{kind.name} messages: the mapping has no outbound template for them; "
                        "not sent"
                    )
                    continue
                try:
                    requests.append(self.render_template(template, context, scope))
                except (RenderError, EvaluationError) as error:
                    problems.append(f"{a_message(kind.name)}: {error}; not sent")
        return requests, problems

    def render_template(
        self, template: RequestTemplate, context: Dict[str, Any], scope: Optional[Scope]
    ) -> OutboundRequest:
        """One template's request (the dry run's subclass also renders it to be shown)."""
        return template.render_chain(context, scope)

    def template_of(self, kind: str) -> Optional[RequestTemplate]:
        """The template of a kind (``turn`` included)."""
        return self.turn if kind == TURN else self.templates.get(kind)

    def next_request(
        self, chain: Chain, answer: Any, scope: Optional[Scope] = None
    ) -> OutboundRequest:
        """The request after a step that was answered ``answer``; RenderError or
        EvaluationError when the template gives none. ``scope``: the process's environment
        unless given (header() and query() are null: the webhook's request is long gone)."""
        template = self.template_of(chain.kind)
        if template is None:
            raise RenderError(f"outbound.{chain.kind} is no longer in the mapping")
        answers = {**chain.answers, chain.name: answer}
        return template.render_chain(chain.context, scope, chain.next, answers)

    def render(
        self,
        message: Dict[str, Any],
        recipient: str,
        source: Optional["Extracted"] = None,
        scope: Optional[Scope] = None,
    ) -> Tuple[List[OutboundRequest], List[str]]:
        """The requests for one bot message (``render_replies`` of that message alone)."""
        return self.render_replies([message], recipient, source, scope)
