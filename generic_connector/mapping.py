"""The request mapping: a decoded event becomes the fields of one Rasa user message.

Knows nothing of HTTP or Rasa: a request that cannot be mapped raises ``MappingError`` with
the field and the expression, and the pipeline decides the answer.
"""

import functools
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Union

from generic_connector import defaults
from generic_connector.compiler import Compiled, Tree, compile_mapping
from generic_connector.errors import GenericConnectorError
from generic_connector.expressions import Expression, json_type, optional, truthy
from generic_connector.fetch_template import FetchTemplate
from generic_connector.functions import FUNCTIONS, Scope


class MappingError(GenericConnectorError):
    """An event that does not give a valid user message: which field, which expression."""

    def __init__(self, message: str, field: str, expression: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.expression = expression


class Extracted(NamedTuple):
    """What one event maps to: the fields of one Rasa ``UserMessage``, and the event."""

    sender_id: str
    text: str
    input_channel: str
    metadata: Optional[Dict[str, Any]]
    message_id: Optional[str]
    event: Any = None
    # Where the message was written: the user, the conversation (room, group, channel) and the
    # thread in it; None where the mapping has no such field. ``sender_id`` is one of them, by
    # the mapping's ``sender_id`` policy.
    user: Optional[str] = None
    conversation: Optional[str] = None
    thread: Optional[str] = None

    @property
    def reply_to(self) -> Dict[str, Optional[str]]:
        """Where replies go: what outbound templates read as ``reply_to``."""
        user = self.user if self.user is not None else self.sender_id
        return {"user": user, "conversation": self.conversation, "thread": self.thread}


# ``sender_id`` policies: which id keys Rasa's tracker.
SENDER_ID_POLICIES = ("user", "conversation", "thread")


# Ids that are numbers must fit in 64 bits (signed or not), as every platform's do.
_SMALLEST, _LARGEST = -(2**63), 2**64 - 1


def _scalar(value: Any, field: str, expression: Expression) -> Optional[str]:
    """A string or number as text; None when the expression found nothing."""
    if value is None or value == "":
        return None
    if type(value) is str:
        return value
    if type(value) is int:
        if not _SMALLEST <= value <= _LARGEST:
            raise MappingError(
                f"{field} is a number beyond 64 bits (`{expression.source}`)",
                field,
                expression.source,
            )
        return str(value)
    if isinstance(value, float):
        return str(value)
    raise MappingError(
        f"{field} must be a string or a number, but `{expression.source}` gave {json_type(value)}",
        field,
        expression.source,
    )


def _required(value: Any, field: str, expression: Expression) -> str:
    if type(value) is str and value:  # nearly always
        return value
    text = _scalar(value, field, expression)
    if text is None:
        raise MappingError(
            f"no {field} in the request: `{expression.source}` found nothing",
            field,
            expression.source,
        )
    return text


# What an attachment keeps of what ``attachments`` gives, and how many one message has.
ATTACHMENT_KEYS = ("type", "url", "mime", "name", "size", "id")
MAX_ATTACHMENTS = 10


def _attachments(value: Any, expression: Expression) -> List[Dict[str, Any]]:
    """``attachments``' value as a list of ``{type, url, mime, name, size, id}`` objects: an
    object is one attachment, null none; other keys are left out."""
    if value is None:
        return []
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(i, (dict, type(None))) for i in items):
        raise MappingError(
            f"attachments must be a list of objects, but `{expression.source}` gave "
            f"{json_type(value)}",
            "attachments",
            expression.source,
        )
    return [
        {key: item[key] for key in ATTACHMENT_KEYS if item.get(key) is not None}
        for item in items[:MAX_ATTACHMENTS]
        if item
    ]


@dataclass(frozen=True)
class Download:
    """``request.download``: how an attachment's content is got (with the platform's token),
    over ``{attachment, event}``; at most ``max_size`` bytes are kept, in metadata, as base64."""

    template: FetchTemplate
    max_size: int

    @classmethod
    def from_config(cls, section: Dict[str, Any]) -> "Download":
        spec = {key: value for key, value in section.items() if key != "max_size"}
        size = int(section.get("max_size", defaults.MAX_ATTACHMENT))
        return cls(FetchTemplate(name="download", **spec), size)


@dataclass(frozen=True)
class IgnoreRule:
    """Events for which ``when`` is true are acknowledged but not sent to Rasa."""

    name: str
    when: Expression


@dataclass(frozen=True)
class ReceiptRule:
    """Events for which ``when`` is true are receipts named ``name`` (delivered, read, failed):
    counted, then ignored, or given to Rasa as ``receipts_intent``; ``sender`` finds the
    conversation when the event names it elsewhere than the mapping's ``sender`` does."""

    name: str
    when: Expression
    sender: Optional[Expression] = None


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
        fetch: Optional[List[Dict[str, Any]]] = None,
        ack: str = "late",
        conversation: Optional[str] = None,
        thread: Optional[str] = None,
        sender_id: str = "user",
        receipts: Optional[List[Dict[str, str]]] = None,
        receipts_intent: Optional[str] = None,
        attachments: Optional[str] = None,
        download: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.format = format
        # early: the mapped messages are stored and the webhook answered before Rasa runs.
        self.ack = ack
        # Requests whose answers the rules and fields read as fetched.<name> (the pipeline
        # makes them; the mapping only knows their templates).
        self.fetch = [FetchTemplate(**spec) for spec in fetch or []]
        self.events = optional(events)
        self.ignore = [IgnoreRule(rule["name"], Expression(rule["when"])) for rule in ignore or []]
        self.receipts = [
            ReceiptRule(rule["name"], Expression(rule["when"]), optional(rule.get("sender")))
            for rule in receipts or []
        ]
        self.receipts_intent = receipts_intent  # None: receipts are counted, not given to Rasa
        self.sender = Expression(sender)
        self.text = Expression(text)
        self.default_input_channel = default_input_channel
        self.input_channel = optional(input_channel)
        self.metadata = optional(metadata)
        self.message_id = optional(message_id)
        self.conversation = optional(conversation)
        self.thread = optional(thread)
        self.sender_id = sender_id  # user, conversation or thread: what keys the tracker
        # Media in the event: metadata.attachments, each downloaded with ``download``.
        self.attachments = optional(attachments)
        self.download = Download.from_config(download) if download else None
        # One function per mapping: shared paths are looked up once per event.
        self._map = compile_mapping(
            [rule.when.tree for rule in self.ignore], self._trees(), FUNCTIONS
        )

    def select_events(self, body: Any, scope: Optional[Scope] = None) -> List[Any]:
        """The events in a request: the body itself, or what ``events`` selects.

        A list gives one event per item, an object is one event, null or nothing none;
        anything else is refused.
        """
        if self.events is None:
            return [body]
        selected = self.events.search(body, scope)
        if selected is None:
            return []
        if isinstance(selected, dict):
            return [selected]
        if not isinstance(selected, list):
            raise MappingError(
                f"`{self.events.source}` must select a list of events, got {json_type(selected)}",
                "events",
                self.events.source,
            )
        return selected

    def map(
        self, event: Any, scope: Optional[Scope] = None, ignore_rules: bool = True
    ) -> Union[Extracted, IgnoreRule]:
        """Map one event, or give the first ignore rule that matches it.

        With ``ignore_rules=False``, what the event maps to whatever the rules say. Raise
        MappingError when a required field is missing, EvaluationError when an expression fails.
        """
        try:
            found = self._map(event, scope) if ignore_rules else self._fields(event, scope)
        except Exception:  # JMESPath type errors, a function failing on the event
            rules = [rule.when for rule in self.ignore] if ignore_rules else []
            for expression in filter(None, rules + self._field_expressions()):
                expression.search(event, scope)  # raises the error naming the failing one
            raise
        if type(found) is int:
            return self.ignore[found]
        user, text, input_channel, metadata, message_id, conversation, thread = found
        user = _required(user, "sender", self.sender)
        text = _required(text, "text", self.text)
        # A field gives a value only when it has an expression.
        if input_channel is not None:
            assert self.input_channel is not None
            input_channel = _scalar(input_channel, "input_channel", self.input_channel)
        if metadata is not None and type(metadata) is not dict:
            assert self.metadata is not None
            raise MappingError(
                f"metadata must be an object, but `{self.metadata.source}` "
                f"gave {json_type(metadata)}",
                "metadata",
                self.metadata.source,
            )
        if message_id is not None:
            assert self.message_id is not None
            message_id = _scalar(message_id, "message_id", self.message_id)
        channel = input_channel or self.default_input_channel
        if self.attachments is not None:
            found_media = _attachments(self.attachments.search(event, scope), self.attachments)
            if found_media:
                metadata = {**(metadata or {}), "attachments": found_media}
        if self.conversation is None and self.thread is None:
            return Extracted(user, text, channel, metadata, message_id, event)
        if conversation is not None:
            assert self.conversation is not None
            conversation = _scalar(conversation, "conversation", self.conversation)
        if thread is not None:
            assert self.thread is not None
            thread = _scalar(thread, "thread", self.thread)
        sender_id = self._sender_id(user, conversation, thread)
        ids = {"user_id": user, "conversation_id": conversation, "thread_id": thread}
        metadata = {**ids, **(metadata or {})}  # the mapping's own keys win
        return Extracted(
            sender_id, text, channel, metadata, message_id, event, user, conversation, thread
        )

    def _sender_id(self, user: str, conversation: Optional[str], thread: Optional[str]) -> str:
        """Rasa's sender_id by the policy: the user; the conversation (else the user); the
        thread within its conversation, ``<conversation>:<thread>`` (else the conversation)."""
        where = conversation or user
        if self.sender_id == "thread" and thread is not None:
            return f"{where}:{thread}"
        return where if self.sender_id != "user" else user

    def receipt(self, event: Any, scope: Optional[Scope] = None) -> Optional[ReceiptRule]:
        """The first receipt rule that matches the event (before the ignore rules), or None."""
        for rule in self.receipts:
            if truthy(rule.when.search(event, scope)):
                return rule
        return None

    def receipt_message(
        self, rule: ReceiptRule, event: Any, scope: Optional[Scope] = None
    ) -> Extracted:
        """A receipt as the message ``receipts_intent`` gives Rasa: the intent as its text, the
        receipt's name and event as its metadata."""
        assert self.receipts_intent is not None
        expression = rule.sender or self.sender
        sender = _required(expression.search(event, scope), "sender", expression)
        metadata = {"receipt": rule.name, "event": event}
        channel = self.default_input_channel
        return Extracted(sender, self.receipts_intent, channel, metadata, None, event)

    @functools.cached_property
    def _fields(self) -> Compiled:
        """The fields without the rules; only ``map(..., ignore_rules=False)`` needs it."""
        return compile_mapping([], self._trees(), FUNCTIONS)

    def _trees(self) -> List[Optional[Tree]]:
        return [field.tree if field else None for field in self._field_expressions()]

    def _field_expressions(self) -> List[Optional[Expression]]:
        """The fields in the order the compiled functions return them."""
        return [
            self.sender, self.text, self.input_channel, self.metadata, self.message_id,
            self.conversation, self.thread,
        ]  # fmt: skip

    def expressions(self) -> List[Expression]:
        """Every expression, in the order an event meets them: events, fetch, receipts, rules,
        fields."""
        fetched = [e for template in self.fetch for e in template.expressions()]
        fetched += [self.attachments] if self.attachments else []
        fetched += self.download.template.expressions() if self.download else []
        found = [self.events, *fetched]
        found += [e for rule in self.receipts for e in (rule.when, rule.sender) if e is not None]
        found += [rule.when for rule in self.ignore]
        found += self._field_expressions()
        return [e for e in found if e is not None]
