"""``token``: a shared secret sent as it is (Telegram, Mattermost, Rocket.Chat)."""

from typing import Any, Mapping, Optional

from generic_connector.auth import AuthFailed, AuthScheme, register
from generic_connector.auth._common import as_bytes, env_key, equal
from generic_connector.request import IncomingRequest


@register
class TokenScheme(AuthScheme):
    """The request carries ``prefix`` + the secret in a header, a query parameter or a body field.

    A body field can only be read once the body is decoded (``needs_body``); the check itself
    is then one lookup and one comparison of bytes prepared when the scheme was built.
    """

    name = "token"
    schema = {
        "description": "a shared secret in a header, query parameter or body field",
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "secret_env"],
        "properties": {
            "type": {"const": "token", "description": "A shared secret sent with the request."},
            "secret_env": env_key("Environment variable holding the token."),
            "header": {
                "type": "string",
                "minLength": 1,
                "description": "The header carrying the token.",
            },
            "query": {
                "type": "string",
                "minLength": 1,
                "description": "The query parameter carrying it.",
            },
            "field": {
                "type": "string",
                "pattern": r"^[^.]+(?:\.[^.]+)*$",
                "description": "The body field carrying it: a top-level name (Mattermost, "
                "Rocket.Chat: token) or a dotted path into objects (header.token).",
                "x-hint": "a field name, or names joined by dots: header.token",
            },
            "prefix": {"type": "string", "description": "Text before the token: 'Bearer '."},
        },
        "oneOf": [{"required": ["header"]}, {"required": ["query"]}, {"required": ["field"]}],
        "x-hint": "give exactly one of header, query and field",
    }

    def __init__(self, section: Mapping[str, Any]) -> None:
        super().__init__(section)
        self.header: Optional[str] = section.get("header")
        self.query: Optional[str] = section.get("query")
        self.field: Optional[str] = section.get("field")
        self.needs_body = self.field is not None
        secret = self.read_env(section["secret_env"])
        self._expected = as_bytes(section.get("prefix", "") + secret) if secret else None

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        if self.header:
            sent = request.header(self.header)
        elif self.query:
            sent = request.query_param(self.query)
        else:
            sent = body_field(body, self.field or "")
        if not isinstance(sent, str) or not sent:  # a repeated form field is a list: refused
            raise AuthFailed("no token")
        if self._expected is None or not equal(as_bytes(sent), self._expected):
            raise AuthFailed("token does not match")


def body_field(body: Any, path: str) -> Any:
    """The value at ``path`` in the decoded body: a top-level field of that name (a form field
    may have a dot in its name), else the dotted path through objects; None if there is none."""
    if not isinstance(body, dict):
        return None
    if path in body:
        return body[path]
    value: Any = body
    for name in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value
