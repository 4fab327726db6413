"""Webhook authentication: HMAC signatures, static tokens and basic auth, from YAML.

Checked before the body is mapped (signatures before it is even decoded). Secrets come from
environment variables named in the mapping, read when the channel is built, and comparisons
take constant time. The reason a check fails is for the log; the channel answers 401 without it.
"""

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, List, Optional

from generic_connector.request import IncomingRequest

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}


class AuthFailed(Exception):
    """Why a request was refused; for the log only."""


@dataclass(frozen=True)
class Auth:
    """The ``auth`` section of a channel (keys as in the schema)."""

    type: str
    secret_env: Optional[str] = None
    header: Optional[str] = None
    query: Optional[str] = None
    field: Optional[str] = None
    prefix: str = ""
    algorithm: str = "sha256"
    encoding: str = "hex"
    signed: str = "{body}"
    separator: Optional[str] = None
    timestamp_header: Optional[str] = None
    id_header: Optional[str] = None
    max_age: float = 300
    secret_encoding: str = "text"
    public_url_env: Optional[str] = None
    username_env: Optional[str] = None
    password_env: Optional[str] = None
    # What requests must carry, from the environment as it was when the channel was built.
    _expected: bytes = dataclass_field(init=False, repr=False, compare=False)
    # A token in a body field can only be checked once the body is decoded.
    needs_body: bool = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs_body", self.type == "token" and self.field is not None)
        if self.type == "hmac":
            expected = self._secret()
        elif self.type == "token":
            expected = (self.prefix + os.environ.get(self.secret_env or "", "")).encode()
        else:
            user = os.environ.get(self.username_env or "", "")
            password = os.environ.get(self.password_env or "", "")
            expected = base64.b64encode(f"{user}:{password}".encode())
        object.__setattr__(self, "_expected", expected)

    def env_names(self) -> List[str]:
        names = [self.secret_env, self.username_env, self.password_env]
        return [name for name in names if name]

    def check(
        self, request: IncomingRequest, body: Any = None, now: Optional[float] = None
    ) -> None:
        """Raise AuthFailed, saying why, unless the request is authentic."""
        if self.type == "hmac":
            self._check_signature(request, time.time() if now is None else now)
        elif self.type == "token":
            self._check_token(request, body)
        else:
            self._check_basic(request)

    def _secret(self) -> bytes:
        value = os.environ.get(self.secret_env or "", "")
        if self.secret_encoding == "whsec":
            return base64.b64decode(value[len("whsec_") :] if value.startswith("whsec_") else value)
        if self.secret_encoding == "base64":
            return base64.b64decode(value)
        return value.encode("utf-8")

    def _check_signature(self, request: IncomingRequest, now: float) -> None:
        sent = request.header(self.header or "")
        if not sent:
            raise AuthFailed(f"no {self.header} header")
        values = {"body": request.body.decode("utf-8", "replace")}
        if self.timestamp_header:
            stamp = request.header(self.timestamp_header) or ""
            try:
                age = abs(now - float(stamp))
            except ValueError:
                raise AuthFailed(f"no valid {self.timestamp_header} header") from None
            if age > self.max_age:
                raise AuthFailed(f"timestamp outside the allowed {self.max_age:g} s window")
            values["timestamp"] = stamp
        if self.id_header:
            values["id"] = request.header(self.id_header) or ""
        if "{url}" in self.signed:
            values["url"] = os.environ.get(self.public_url_env or "") or request.url
        if "{form_params}" in self.signed:
            values["form_params"] = _sorted_params(request.body)
        message = self.signed.format(**values).encode("utf-8")
        mac = hmac.new(self._expected, message, _DIGESTS[self.algorithm]).digest()
        expected = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
        candidates = sent.split(self.separator) if self.separator else [sent]
        if not any(_equal(candidate, self.prefix + expected) for candidate in candidates):
            raise AuthFailed("signature does not match")

    def _check_token(self, request: IncomingRequest, body: Any) -> None:
        if self.header:
            sent = request.header(self.header)
        elif self.query:
            sent = request.query_param(self.query)
        else:
            sent = body.get(self.field) if isinstance(body, dict) else None
        if not isinstance(sent, str) or not sent:
            raise AuthFailed("no token")
        if not hmac.compare_digest(sent.encode(), self._expected):
            raise AuthFailed("token does not match")

    def _check_basic(self, request: IncomingRequest) -> None:
        sent = request.header("Authorization") or ""
        if not sent.startswith("Basic "):
            raise AuthFailed("no basic credentials")
        if not hmac.compare_digest(sent[len("Basic ") :].strip().encode(), self._expected):
            raise AuthFailed("basic credentials do not match")


def _equal(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def _sorted_params(body: bytes) -> str:
    """Twilio's signed form: every parameter's name and value, sorted by name."""
    from urllib.parse import parse_qsl

    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return "".join(name + value for name, value in sorted(pairs))
