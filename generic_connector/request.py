"""An incoming webhook request, independent of the web framework, and its decoding."""

import functools
import json
import re
from typing import Any, Callable, Dict, Mapping, Optional
from urllib.parse import parse_qs

import ujson  # Rasa (and Sanic) bring it; several times faster than the json module

from generic_connector import defaults
from generic_connector.errors import HTTPError
from generic_connector.xmlbody import XMLRefused, media_type_is_xml, read_xml

FORM = "application/x-www-form-urlencoded"


def media_type_of(content_type: str) -> str:
    """``application/json`` of ``Application/JSON; charset=utf-8``."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


class IncomingRequest:
    """What the channel needs of an HTTP request; built from Sanic's or from a test case.

    ``headers`` must answer ``get()`` case-insensitively (Sanic's do; ``from_parts`` makes a
    plain dict that does), ``query.get()`` gives the first value of a parameter, and
    ``path_params`` the parameters of the route that matched (Sanic's ``match_info``; empty
    when the route has none).
    """

    __slots__ = (
        "body", "headers", "_query", "method", "path", "_url", "_source", "_media_type",
        "_path_params",
    )  # fmt: skip

    def __init__(
        self,
        body: bytes,
        headers: Optional[Mapping[str, str]] = None,
        query: Optional[Mapping[str, Any]] = None,
        method: str = "POST",
        path: str = "/webhook",
        url: str = "",
        source: Any = None,
        path_params: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.body = body
        self.headers = headers if headers is not None else {}
        self._query = query
        self.method = method
        self.path = path
        self._url = url
        # Sanic's request: its query, URL and route parameters are only worked out if a
        # mapping reads them.
        self._source = source
        self._media_type: Optional[str] = None
        self._path_params = path_params

    @property
    def query(self) -> Mapping[str, Any]:
        if self._query is None:
            self._query = self._source.args if self._source is not None else {}
        return self._query

    @property
    def path_params(self) -> Mapping[str, str]:
        if self._path_params is None:
            source = self._source
            self._path_params = getattr(source, "match_info", None) or {}
        return self._path_params

    @property
    def url(self) -> str:
        if not self._url and self._source is not None:
            self._url = self._source.url
        return self._url

    @classmethod
    def from_parts(
        cls,
        body: bytes,
        headers: Optional[Dict[str, str]] = None,
        query: Optional[Dict[str, str]] = None,
        method: str = "POST",
        path: str = "/webhook",
        url: str = "",
        path_params: Optional[Dict[str, str]] = None,
    ) -> "IncomingRequest":
        """A request from plain dicts, as test cases and the dry run give them."""
        lowered = {name.lower(): value for name, value in (headers or {}).items()}
        params = dict(path_params or {})
        return cls(body, lowered, dict(query or {}), method.upper(), path, url, None, params)

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    def query_param(self, name: str) -> Optional[str]:
        return self.query.get(name)

    def path_param(self, name: str) -> Optional[str]:
        return self.path_params.get(name)

    @property
    def media_type(self) -> str:
        if self._media_type is None:
            self._media_type = media_type_of(self.headers.get("content-type") or "")
        return self._media_type


MAX_DIGITS = 20

# Content types a JSON mapping accepts: JSON, none, and what `curl -d` sends by default.
_JSON_TYPES = {"", "application/json", "text/plain", FORM}

# An integer of more digits than 2**64 has (20) in a JSON body. Turning a long digit string
# into an int takes time quadratic in its length (4 s for a million digits), so such bodies
# take the careful path, which refuses long integers before converting them. Found by
# turning every digit into 0 and looking for 21 of them: 0.3 µs for a Telegram update,
# where a regular expression took 4.6 µs.
_DIGITS_AS_ZEROS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_NUMBER = b"0" * (MAX_DIGITS + 1)
# An escaped UTF-16 surrogate (\ud800-\udfff); a lone one decodes to a str that cannot be
# encoded again, which breaks Rasa's tracker stores.
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def decode_body(
    request: IncomingRequest,
    body_format: str = "json",
    events: bool = False,
    max_fields: int = defaults.MAX_FORM_FIELDS,
) -> Any:
    """The body as the mapping sees it; HTTPError (400, 415) saying what is wrong otherwise.

    ``json`` bodies must be objects (or lists when the mapping selects ``events``); ``form``
    bodies become an object of strings (a list where a field repeats); ``xml`` bodies an
    object as ``xmlbody`` reads them; ``auto`` is one of these by the Content-Type. Text must
    be valid Unicode (strict UTF-8, no lone surrogate escaped or raw) and integers at most 20
    digits long.

    An empty body (no bytes at all, whatever the Content-Type) is None: there is nothing to
    parse, and a handshake may still answer the request from its headers (a validation
    request with ``Content-Length: 0``). The pipeline refuses it on a route that carries
    messages. A form body is the exception: an empty form is a form without fields, ``{}``.
    """
    form = body_format == "form" or (body_format == "auto" and request.media_type == FORM)
    if not request.body and not form:
        return None
    if body_format == "auto":
        body_format = _format_of(request.media_type)
    if body_format == "form":
        return _decode_form(request, max_fields)
    if body_format == "xml":
        return _decode_xml(request)
    if request.headers.get("content-type") != "application/json":  # else nothing to parse
        media_type = request.media_type
        if media_type not in _JSON_TYPES and not is_json(media_type):
            raise HTTPError(415, f"this channel expects a JSON body, got Content-Type {media_type}")
    raw = request.body
    try:
        # Strict UTF-8: the raw bytes of a surrogate (ED A0 80) are refused here, where the
        # JSON decoders would turn them into a lone surrogate, as they do its escape.
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HTTPError(
            400, f"request body is not valid UTF-8 (at byte {error.start}): {error.reason}"
        ) from None
    try:
        long_number = _LONG_NUMBER in raw.translate(_DIGITS_AS_ZEROS)
        body = _careful_json(raw) if long_number else ujson.loads(raw)
    except ValueError as error:
        hint = f" (Content-Type: {request.media_type})" if request.media_type == FORM else ""
        raise HTTPError(400, f"request body is not valid JSON{hint}: {error}") from None
    if not isinstance(body, dict) and not (events and isinstance(body, list)):
        raise HTTPError(400, "request body must be a JSON object")
    if _ESCAPED_SURROGATE.search(raw) and not valid_unicode(body):
        raise HTTPError(400, "request body holds text that is not valid Unicode (a lone surrogate)")
    return body


def _format_of(media_type: str) -> str:
    """``request.format: auto``: the body's format by its Content-Type."""
    if media_type == FORM:
        return "form"
    if media_type_is_xml(media_type):
        return "xml"
    if media_type in _JSON_TYPES or is_json(media_type):
        return "json"
    raise HTTPError(
        415, f"this channel takes JSON, form or XML bodies, got Content-Type {media_type}"
    )


def _decode_xml(request: IncomingRequest) -> Dict[str, Any]:
    if request.media_type not in ("", "text/plain") and not media_type_is_xml(request.media_type):
        raise HTTPError(
            415, f"this channel expects an XML body, got Content-Type {request.media_type}"
        )
    try:
        return read_xml(request.body)
    except XMLRefused as error:
        raise HTTPError(400, f"request body is refused: {error}") from None


def _careful_json(raw: bytes) -> Any:
    """JSON with integers of more than 20 digits refused before they are converted."""
    return json.loads(raw, parse_int=bounded_int, parse_constant=no_constant)


def bounded_int(digits: str) -> int:
    """``parse_int`` for JSON that refuses integers of more than MAX_DIGITS digits (also for
    ``parse_json()``)."""
    if len(digits.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer has more than {MAX_DIGITS} digits")
    return int(digits)


def no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def valid_unicode(value: Any) -> bool:
    """Whether every string in a decoded value (keys too) can be written as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.isascii():
                continue
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


def _decode_form(request: IncomingRequest, max_fields: int) -> Dict[str, Any]:
    if is_json(request.media_type):
        raise HTTPError(415, f"this channel expects a form body ({FORM}), got JSON")
    if request.media_type not in ("", FORM):
        raise HTTPError(
            415, f"this channel expects a form body ({FORM}), got Content-Type {request.media_type}"
        )
    try:
        text = request.body.decode("utf-8")
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=max_fields
        )
    except UnicodeDecodeError:
        raise HTTPError(400, f"request body is not a valid form ({FORM}): not UTF-8") from None
    except ValueError as error:
        reason = "too many fields" if "max_num_fields" in str(error) else "malformed"
        raise HTTPError(400, f"request body is not a valid form ({FORM}): {reason}") from None
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}


# JSON text for answers and API requests (UTF-8, slashes as they are); a partial, not a
# function, as it is called on every answer.
dumps: Callable[[Any], str] = functools.partial(
    ujson.dumps, ensure_ascii=False, escape_forward_slashes=False
)
