"""``basic``: HTTP basic authentication (RFC 7617), for front ends that can send it."""

import base64
import binascii
from typing import Any, Mapping

from generic_connector.auth import AuthFailed, AuthScheme, register
from generic_connector.auth._common import env_key, equal
from generic_connector.request import IncomingRequest


@register
class BasicScheme(AuthScheme):
    """``Authorization: Basic base64(user:password)`` with the configured user and password."""

    name = "basic"
    schema = {
        "description": "HTTP basic auth",
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "username_env", "password_env"],
        "properties": {
            "type": {"const": "basic", "description": "HTTP basic authentication."},
            "username_env": env_key("Environment variable holding the user name."),
            "password_env": env_key("Environment variable holding the password."),
        },
    }
    challenge = {"WWW-Authenticate": 'Basic realm="webhook", charset="UTF-8"'}

    def __init__(self, section: Mapping[str, Any]) -> None:
        super().__init__(section)
        user = self.read_env(section["username_env"])
        password = self.read_env(section["password_env"])
        self._expected = f"{user}:{password}".encode() if user and password else None

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        scheme, _, credentials = (request.header("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "basic" or not credentials.strip():
            raise AuthFailed("no basic credentials")
        try:
            sent = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise AuthFailed("basic credentials are not valid base64") from None
        if self._expected is None or not equal(sent, self._expected):
            raise AuthFailed("basic credentials do not match")
