"""The templates of ``request.fetch``: each entry rendered over the event into the request
to send. Pure template code, no HTTP: the mapping holds these, and ``fetch`` sends them.

An entry may carry a ``body`` (JSON or form, as outbound bodies) and a ``when``: a fetch whose
``when`` is not true for an event is not made, and its ``fetched.<name>`` is null.
"""

import json
from typing import Any, Dict, List, NamedTuple, Optional
from urllib.parse import urlsplit

from generic_connector import defaults
from generic_connector.errors import GenericConnectorError, RenderError
from generic_connector.expressions import Expression, truthy
from generic_connector.functions import Scope
from generic_connector.outbound import (
    BODY_FORMATS,
    HostAllowList,
    URLRefused,
    checked_url,
    url_port,
)


class FetchFailed(GenericConnectorError):
    """The platform's API did not give a usable answer; the message is for the log."""


class FetchRequest(NamedTuple):
    name: str
    method: str
    url: str
    headers: Dict[str, str]
    body: Optional[bytes] = None

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    @property
    def port(self) -> Optional[int]:
        return url_port(self.url)


class FetchTemplate:
    """One entry of ``request.fetch``: JMESPath over the event, as the mapping's fields."""

    def __init__(
        self,
        name: str,
        url: str,
        method: str = "GET",
        headers: Optional[Dict[str, str]] = None,
        timeout: float = defaults.FETCH_TIMEOUT,
        retries: int = defaults.FETCH_RETRIES,
        allow_hosts: Optional[List[str]] = None,
        body: Optional[str] = None,
        content_type: str = "json",
        when: Optional[str] = None,
    ) -> None:
        self.name = name
        self.method = method
        self.url = Expression(url)
        self.headers = {key: Expression(value) for key, value in (headers or {}).items()}
        self.timeout = timeout
        self.retries = retries
        self.allow_hosts = HostAllowList(allow_hosts) if allow_hosts else None
        self.body = Expression(body) if body else None
        self.format = BODY_FORMATS[content_type]()
        self.when = Expression(when) if when else None

    def expressions(self) -> List[Expression]:
        optional = [e for e in (self.body, self.when) if e is not None]
        return [self.url, *self.headers.values(), *optional]

    def wanted(self, event: Any, scope: Optional[Scope]) -> bool:
        """Whether the fetch is made for ``event``: its ``when`` is true, or it has none."""
        return self.when is None or truthy(self.when.search(event, scope))

    def render(self, event: Any, scope: Optional[Scope]) -> FetchRequest:
        """The request for ``event``; FetchFailed when the template gives no usable one.

        The URL must pass ``checked_url`` (no non-ASCII host, no ``.`` or ``..`` path segment,
        ...) and, with ``allow_hosts``, go to an allowed host on an allowed port.
        """
        try:
            url = checked_url(self.url.search(event, scope))
        except URLRefused as refused:
            raise FetchFailed(f"fetch {self.name!r}: the url template gave {refused}") from None
        headers = {}
        for key, expression in self.headers.items():
            value = expression.search(event, scope)
            if value is None:
                continue
            value = value if isinstance(value, str) else json.dumps(value)
            if "\r" in value or "\n" in value:
                raise FetchFailed(f"fetch {self.name!r}: header {key} holds a line break")
            headers[key] = value
        body = None
        if self.body is not None:
            try:
                body = self.format.encode(self.body.search(event, scope))
            except RenderError as error:
                raise FetchFailed(f"fetch {self.name!r}: the body template gave {error}") from None
            if not any(key.lower() == "content-type" for key in headers):
                headers["Content-Type"] = self.format.media_type
        request = FetchRequest(self.name, self.method, url, headers, body)
        if self.allow_hosts is not None and not self.allow_hosts.allows(url):
            raise FetchFailed(
                f"fetch {self.name!r}: host {request.host!r} on port {request.port} "
                "is not in allow_hosts"
            )
        return request
