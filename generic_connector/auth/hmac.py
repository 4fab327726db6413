"""``hmac``: an HMAC signature over the request (Meta, LINE, Slack, Standard Webhooks, Twilio)."""

import base64
import hashlib
import hmac
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote_to_bytes

from generic_connector.auth import AuthConfigError, AuthFailed, AuthScheme, register
from generic_connector.auth._common import (
    KeyFormatError,
    SignedRequest,
    as_bytes,
    env_key,
    equal,
    key_problem,
    needs_header,
    read_key,
    signature_keys,
)
from generic_connector.request import IncomingRequest

_DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
_ABSOLUTE_URL = re.compile(r"https?://[^\s/?#]+(?:[/?#]\S*)?")


@register
class HmacScheme(AuthScheme):
    """The signature in ``header`` must be the HMAC of the ``signed`` template with the secret."""

    name = "hmac"
    schema = {
        "description": "a signature over the request with a shared secret",
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "secret_env", "header"],
        "properties": {
            "type": {"const": "hmac", "description": "An HMAC signature over the request."},
            "secret_env": env_key("Environment variable holding the signing secret."),
            **signature_keys(
                ["url", "form_params"],
                " {url}: the public URL; {form_params}: Twilio's sorted form names and values.",
            ),
            "algorithm": {"enum": sorted(_DIGESTS), "description": "Default sha256."},
            "encoding": {
                "enum": ["hex", "base64"],
                "description": "How the signature is written, default hex.",
            },
            "secret_encoding": {
                "enum": ["text", "base64", "whsec"],
                "description": "How the secret is written: text (its UTF-8 bytes, the default), "
                "base64, or whsec (Standard Webhooks' whsec_<base64>).",
            },
            "public_url_env": env_key(
                "Required with {url}: variable holding the public URL the platform posts to "
                "(as configured at the platform). The request's own URL is never signed: its "
                "host is whatever the client sends in Host."
            ),
        },
        "allOf": [
            needs_header("timestamp", "timestamp_header"),
            needs_header("id", "id_header"),
            {
                "if": {
                    "required": ["signed"],
                    "properties": {"signed": {"pattern": r"\{url\}"}},
                },
                "then": {
                    "dependencies": {"signed": ["public_url_env"]},
                    "x-hint": "signed uses {url}: public_url_env must name the variable holding "
                    "the URL the platform posts to; the request's own URL is never signed, as "
                    "its host is whatever the client sends",
                },
            },
        ],
    }

    def __init__(self, section: Mapping[str, Any]) -> None:
        super().__init__(section)
        self.signature = SignedRequest(section, extra=("url", "form_params"))
        self.digest = _DIGESTS[section.get("algorithm", "sha256")]
        self.encoding: str = section.get("encoding", "hex")
        self._key = read_key(self, section["secret_env"], section.get("secret_encoding", "text"))
        self.public_url: Optional[bytes] = None
        if "url" in self.signature.template.fields:
            # From configuration only: the request's URL is built from the Host header, which
            # the client chooses, so a signature would replay under any other host.
            url_env = section.get("public_url_env")
            if not url_env:
                raise AuthConfigError(
                    "signed uses {url}: public_url_env must name the variable holding the "
                    "public URL the platform posts to"
                )
            self.public_url = self._read_url(url_env)

    def _read_url(self, name: str) -> Optional[bytes]:
        value = self.read_env(name)
        if value is None:
            return None
        if not _ABSOLUTE_URL.fullmatch(value):
            error = KeyFormatError("is not an absolute http(s) URL (https://host/path)")
            self.unusable(key_problem(name, error))
            return None
        return as_bytes(value)

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        sent = self.signature.signatures(request)
        extra: Dict[str, bytes] = {}
        if "url" in self.signature.template.fields:
            if self.public_url is None:  # check() refuses before this
                raise AuthFailed("no public URL to sign")
            extra["url"] = self.public_url
        if "form_params" in self.signature.template.fields:
            extra["form_params"] = sorted_form_params(request.body)
        message = self.signature.message(request, now, extra)
        if self._key is None:  # check() refuses before this; kept so no empty key is ever used
            raise AuthFailed("no usable secret")
        mac = hmac.new(self._key, message, self.digest).digest()
        expected = (
            mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode()
        ).encode()
        if not any(equal(as_bytes(candidate), expected) for candidate in sent):
            raise AuthFailed("signature does not match")


def sorted_form_params(body: bytes) -> bytes:
    """Twilio's signed form: every parameter's name and value, decoded, sorted by name.

    Worked on bytes, so that the signature covers exactly what was sent.
    """
    pairs: List[Tuple[bytes, bytes]] = []
    for field in body.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        pairs.append((_unquote(name), _unquote(value)))
    return b"".join(name + value for name, value in sorted(pairs))


def _unquote(text: bytes) -> bytes:
    return unquote_to_bytes(text.replace(b"+", b" "))
