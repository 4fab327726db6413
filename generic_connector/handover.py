"""Handover: the bot paused for one conversation while a human agent answers, and resumed.

A channel's ``handover`` section holds rules over each event (``pause_when``, ``resume_when``),
which conversation an event is about (``conversation``, default: the request's ``sender``), a
``timeout`` after which the bot resumes on its own, and a ``relay`` for the user messages of a
paused conversation (an outbound template, by kind or inline). A pause is the channel's
``ConversationStore`` value of kind ``PAUSED`` (``{"since", "by", "until"}``, expiring with the
timeout), shared by replicas on Redis. The pipeline's ``apply_handover`` stage reads and writes
it; the HTTP API (``channel.py``) and ``generic-connector conversations`` write it too, through
``operate``.
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from generic_connector.conversations import PAUSED, ConversationStore
from generic_connector.errors import HTTPError
from generic_connector.expressions import Expression, truthy
from generic_connector.functions import Scope
from generic_connector.mapping import Extracted
from generic_connector.outbound import Outbound, OutboundRequest, RequestTemplate, merge_defaults

PAUSE = "pause"
RESUME = "resume"
ACTIONS = (PAUSE, RESUME)
# What the ignore list and the dry run name a message held for a paused conversation by.
HELD = "handover: conversation paused"
# The longest conversation id the API and the command take (a Redis key holds it).
MAX_CONVERSATION = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Handover:
    """The ``handover`` section, compiled. ``relay`` is the kind of an outbound template;
    ``relay_template`` an inline one (outbound's ``defaults`` merged in)."""

    pause_when: Optional[Expression] = None
    resume_when: Optional[Expression] = None
    conversation: Optional[Expression] = None
    timeout: Optional[float] = None
    relay: Optional[str] = None
    relay_template: Optional[RequestTemplate] = None

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any], outbound: Optional[Mapping[str, Any]] = None
    ) -> "Handover":
        """From a validated section and the channel's outbound section."""

        def expression(key: str) -> Optional[Expression]:
            return Expression(section[key]) if key in section else None

        relay = section.get("relay")
        template = None
        if isinstance(relay, dict):
            defaults = {k: v for k, v in ((outbound or {}).get("defaults") or {}).items()}
            defaults.pop("steps", None)
            template = RequestTemplate("relay", **merge_defaults(defaults, relay))
            relay = None
        return cls(
            pause_when=expression("pause_when"),
            resume_when=expression("resume_when"),
            conversation=expression("conversation"),
            timeout=section.get("timeout"),
            relay=relay,
            relay_template=template,
        )

    def expressions(self) -> List[Expression]:
        found = [self.pause_when, self.resume_when, self.conversation]
        found += self.relay_template.expressions() if self.relay_template else []
        return [e for e in found if e is not None]

    @property
    def relays(self) -> bool:
        return self.relay is not None or self.relay_template is not None

    def change(self, event: Any, scope: Scope) -> Optional[str]:
        """``PAUSE`` or ``RESUME`` when a rule is true for the event (pause first), else None."""
        if self.pause_when is not None and truthy(self.pause_when.search(event, scope)):
            return PAUSE
        if self.resume_when is not None and truthy(self.resume_when.search(event, scope)):
            return RESUME
        return None

    def conversation_of(self, event: Any, scope: Scope, sender: Expression) -> Optional[str]:
        """The conversation an event pauses or resumes: ``conversation``, else the request's
        ``sender`` expression, over the event; None when it gives no string or number."""
        found = (self.conversation or sender).search(event, scope)
        if isinstance(found, bool) or not isinstance(found, (str, int, float)):
            return None
        text = found if isinstance(found, str) else json.dumps(found)
        return text if text and conversation_problem(text) is None else None

    def relay_request(
        self, outbound: Outbound, message: Extracted, scope: Optional[Scope]
    ) -> OutboundRequest:
        """The request that relays a held user message; RenderError or EvaluationError when
        the template gives none. Templates see ``message`` (sender, text, metadata,
        message_id), ``recipient``, ``event`` and ``metadata``."""
        context = {
            "message": {
                "sender": message.sender_id,
                "text": message.text,
                "metadata": message.metadata,
                "message_id": message.message_id,
            },
            "recipient": message.sender_id,
            "event": message.event,
            "metadata": message.metadata,
        }
        template = self.relay_template or outbound.template_of(self.relay or "")
        assert template is not None  # the config loader checks the name
        return outbound.render_template(template, context, scope)


def conversation_problem(conversation: str) -> Optional[str]:
    """Why a conversation id is refused by the API and the command, or None."""
    if not conversation:
        return "the conversation id is empty"
    if len(conversation) > MAX_CONVERSATION:
        return f"the conversation id is longer than {MAX_CONVERSATION} characters"
    if _CONTROL.search(conversation):
        return "the conversation id holds control characters"
    return None


async def pause(
    store: ConversationStore, conversation: str, by: str, now: float, timeout: Optional[float]
) -> Dict[str, Any]:
    """Pause the bot for a conversation; the stored value. ``timeout``: seconds until the bot
    resumes on its own (None: until resumed)."""
    value: Dict[str, Any] = {"since": now, "by": by}
    if timeout is not None:
        value["until"] = now + timeout
    await store.put(PAUSED, conversation, value, ttl=timeout)
    return value


async def resume(store: ConversationStore, conversation: str) -> bool:
    """Resume the bot for a conversation; whether it was paused."""
    return await store.delete(PAUSED, conversation)


async def paused(store: ConversationStore) -> Dict[str, Any]:
    """Every paused conversation of the channel, with its pause."""
    return await store.all(PAUSED)


async def operate(
    store: ConversationStore,
    action: str,
    conversation: Optional[str],
    body: bytes,
    by: str,
    now: float,
    default_timeout: Optional[float] = None,
) -> Tuple[int, Dict[str, Any]]:
    """One call of the conversations API: ``pause``, ``resume`` or ``list`` (conversation
    None); the status and JSON answer. HTTPError (400) for what it refuses; the store's
    ``Unavailable`` goes through."""
    if action == "list":
        found = await paused(store)
        rows = [{"conversation": c, **value} for c, value in sorted(found.items())]
        return 200, {"paused": rows}
    if action not in ACTIONS:
        raise HTTPError(400, f"unknown action {action[:40]!r}; use pause or resume")
    assert conversation is not None
    problem = conversation_problem(conversation)
    if problem is not None:
        raise HTTPError(400, problem)
    timeout = _timeout(body, default_timeout)
    if action == PAUSE:
        value = await pause(store, conversation, by, now, timeout)
        return 200, {"conversation": conversation, "paused": True, **value}
    was = await resume(store, conversation)
    return 200, {"conversation": conversation, "paused": False, "was_paused": was}


def _timeout(body: bytes, default: Optional[float]) -> Optional[float]:
    """``{"timeout": seconds}`` from an optional JSON body, else ``default``."""
    if not body.strip():
        return default
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, "the body is not JSON") from None
    if not isinstance(document, dict) or set(document) - {"timeout"}:
        raise HTTPError(400, 'the body takes one key: {"timeout": seconds}')
    timeout = document.get("timeout", default)
    if timeout is None:
        return None
    if not valid_timeout(timeout):
        raise HTTPError(400, "timeout must be a positive number of seconds")
    return float(timeout)


def valid_timeout(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
