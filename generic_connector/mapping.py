"""The request mapping: a decoded event becomes the fields of one Rasa user message.

Knows nothing of HTTP or Rasa: a request that cannot be mapped raises ``MappingError`` with
the field and the expression, and the pipeline decides the answer.
"""

import functools
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Union

from generic_connector.compiler import Compiled, Tree, compile_mapping
from generic_connector.errors import GenericConnectorError
from generic_connector.expressions import Expression, json_type, optional
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
        fetch: Optional[List[Dict[str, Any]]] = None,
        ack: str = "late",
    ) -> None:
        self.format = format
        # early: the mapped messages are stored and the webhook answered before Rasa runs.
        self.ack = ack
        # Requests whose answers the rules and fields read as fetched.<name> (the pipeline
        # makes them; the mapping only knows their templates).
        self.fetch = [FetchTemplate(**spec) for spec in fetch or []]
        self.events = optional(events)
        self.ignore = [IgnoreRule(rule["name"], Expression(rule["when"])) for rule in ignore or []]
        self.sender = Expression(sender)
        self.text = Expression(text)
        self.default_input_channel = default_input_channel
        self.input_channel = optional(input_channel)
        self.metadata = optional(metadata)
        self.message_id = optional(message_id)
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
        sender_id, text, input_channel, metadata, message_id = found
        sender_id = _required(sender_id, "sender", self.sender)
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
        return Extracted(sender_id, text, channel, metadata, message_id, event)

    @functools.cached_property
    def _fields(self) -> Compiled:
        """The fields without the rules; only ``map(..., ignore_rules=False)`` needs it."""
        return compile_mapping([], self._trees(), FUNCTIONS)

    def _trees(self) -> List[Optional[Tree]]:
        return [field.tree if field else None for field in self._field_expressions()]

    def _field_expressions(self) -> List[Optional[Expression]]:
        """The fields in the order the compiled functions return them."""
        return [self.sender, self.text, self.input_channel, self.metadata, self.message_id]

    def expressions(self) -> List[Expression]:
        """Every expression, in the order an event meets them: events, fetch, rules, fields."""
        fetched = [e for template in self.fetch for e in template.expressions()]
        found = [self.events, *fetched] + [rule.when for rule in self.ignore]
        found += self._field_expressions()
        return [e for e in found if e is not None]
