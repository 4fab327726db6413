"""Outbound requests: each bot message becomes HTTP requests to the platform's API.

Templates (method, URL, headers, body) are JMESPath over ``{message, recipient, event,
metadata}`` and are compiled at start-up like every other expression. This module only renders
requests; ``delivery`` sends them.
"""

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from generic_connector.errors import HTTPError
from generic_connector.mapping import Expression, Extracted

KINDS = ("text", "buttons", "image", "attachment", "custom")


class RenderError(ValueError):
    """A template that gave no usable request for this message."""


@dataclass(frozen=True)
class OutboundRequest:
    """One HTTP request to the platform's API, ready to send."""

    kind: str
    method: str
    url: str
    headers: Dict[str, str]
    body: Optional[bytes]

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


class RequestTemplate:
    """How one kind of bot message becomes a request."""

    def __init__(
        self,
        kind: str,
        url: str,
        method: str = "POST",
        headers: Optional[Dict[str, str]] = None,
        body: Optional[str] = None,
        content_type: str = "json",
    ) -> None:
        self.kind = kind
        self.method = method
        self.url = Expression(url)
        self.headers = {name: Expression(value) for name, value in (headers or {}).items()}
        self.body = Expression(body) if body else None
        self.content_type = content_type

    def expressions(self) -> List[Expression]:
        found = [self.url, *self.headers.values()]
        return found + ([self.body] if self.body else [])

    def render(self, context: Dict[str, Any]) -> OutboundRequest:
        url = self.url.search(context)
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise RenderError(f"the {self.kind} template gave no http(s) URL")
        headers = {}
        for name, expression in self.headers.items():
            value = expression.search(context)
            if value is not None:
                headers[name] = value if isinstance(value, str) else json.dumps(value)
        body = None
        if self.body is not None:
            payload = self.body.search(context)
            if self.content_type == "form":
                body = urlencode(_form_fields(payload)).encode("utf-8")
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
            else:
                body = json.dumps(_without_nulls(payload), ensure_ascii=False).encode("utf-8")
                headers.setdefault("Content-Type", "application/json")
        return OutboundRequest(self.kind, self.method, url, headers, body)


def _without_nulls(value: Any) -> Any:
    """Drop null members: optional API fields (thread_ts, caption) are better absent."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _form_fields(payload: Any) -> List[Tuple[str, str]]:
    if not isinstance(payload, dict):
        raise RenderError("a form body template must give an object")
    return [
        (k, v if isinstance(v, str) else json.dumps(v)) for k, v in payload.items() if v is not None
    ]


class Outbound:
    """The ``outbound`` section: templates per message kind and the delivery policy."""

    def __init__(
        self,
        templates: Dict[str, RequestTemplate],
        wait: bool = False,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        allow_hosts: Optional[List[str]] = None,
    ) -> None:
        self.templates = templates
        self.wait = wait
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.allow_hosts = [host.lower() for host in allow_hosts] if allow_hosts else None

    @classmethod
    def from_config(cls, section: Dict[str, Any]) -> "Outbound":
        defaults = section.get("defaults", {})
        templates = {
            kind: RequestTemplate(kind, **{**defaults, **section[kind]})
            for kind in KINDS
            if kind in section
        }
        options = {k: v for k, v in section.items() if k not in KINDS and k != "defaults"}
        return cls(templates, **options)

    def expressions(self) -> List[Expression]:
        return [e for template in self.templates.values() for e in template.expressions()]

    def allows(self, request: OutboundRequest) -> bool:
        return self.allow_hosts is None or request.host.lower() in self.allow_hosts

    def render(
        self,
        message: Dict[str, Any],
        recipient: str,
        source: Optional[Extracted] = None,
    ) -> Tuple[List[OutboundRequest], List[str]]:
        """The requests for one bot message, in the order Rasa's own channels send its parts,
        and the problems of the parts that could not be rendered.

        ``source`` is the user message the reply answers (none for messages Rasa sends on its
        own): its event and metadata are what the templates see as ``event`` and ``metadata``.
        """
        context = {
            "message": message,
            "recipient": recipient,
            "event": source.event if source else None,
            "metadata": source.metadata if source else None,
        }
        kinds = []
        if message.get("buttons") or message.get("quick_replies"):
            kinds.append("buttons" if "buttons" in self.templates else "text")
        elif message.get("text"):
            kinds.append("text")
        kinds += [kind for kind in ("custom", "image", "attachment") if message.get(kind)]
        requests, problems = [], []
        for kind in kinds:
            template = self.templates.get(kind)
            try:
                if template is None:
                    raise RenderError(f"the mapping has no outbound template for {kind} messages")
                requests.append(template.render(context))
            except (RenderError, HTTPError) as error:
                problems.append(str(error))
        return requests, problems
