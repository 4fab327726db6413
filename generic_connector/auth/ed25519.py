"""``ed25519``: a public-key signature over the request (Discord, Standard Webhooks ``v1a``)."""

from typing import Any, Mapping, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from generic_connector.auth import AuthFailed, AuthScheme, register
from generic_connector.auth._common import (
    KeyFormatError,
    SignedRequest,
    decode_key,
    decode_text,
    env_key,
    key_problem,
    needs_header,
    signature_keys,
)
from generic_connector.request import IncomingRequest


@register
class Ed25519Scheme(AuthScheme):
    """A signature in ``header`` that the platform's Ed25519 public key verifies over ``signed``.

    Only the public key is configured: whoever reads it cannot sign requests.
    """

    name = "ed25519"
    schema = {
        "description": "an Ed25519 signature over the request, checked with a public key",
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "public_key_env", "header"],
        "properties": {
            "type": {"const": "ed25519", "description": "An Ed25519 signature."},
            "public_key_env": env_key(
                "Environment variable holding the platform's 32-byte Ed25519 public key."
            ),
            "key_encoding": {
                "enum": ["hex", "base64", "whpk"],
                "description": "How the public key is written: hex (Discord, the default), "
                "base64, or whpk (Standard Webhooks' whpk_<base64>).",
            },
            "encoding": {
                "enum": ["hex", "base64"],
                "description": "How the signature is written: hex (Discord, the default) or "
                "base64 (Standard Webhooks).",
            },
            **signature_keys(),
        },
        "allOf": [
            needs_header("timestamp", "timestamp_header"),
            needs_header("id", "id_header"),
        ],
    }

    def __init__(self, section: Mapping[str, Any]) -> None:
        super().__init__(section)
        self.signature = SignedRequest(section)
        self.encoding: str = section.get("encoding", "hex")
        self._key = self._read_key(section["public_key_env"], section.get("key_encoding", "hex"))

    def _read_key(self, name: str, encoding: str) -> Optional[Ed25519PublicKey]:
        value = self.read_env(name)
        if value is None:
            return None
        what = f"a 32-byte Ed25519 public key in {encoding}"
        try:
            return Ed25519PublicKey.from_public_bytes(decode_key(value.strip(), encoding, 32))
        except KeyFormatError as error:
            self.unusable(key_problem(name, error, what))
        except ValueError:  # 32 bytes that are no point of the curve
            self.unusable(key_problem(name, KeyFormatError("is not a valid key"), what))
        return None

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        sent = self.signature.signatures(request)
        message = self.signature.message(request, now)
        if self._key is None:  # check() refuses before this
            raise AuthFailed("no usable public key")
        for text in sent:
            signature = decode_text(text, self.encoding)
            if signature is None or len(signature) != 64:
                continue
            try:
                self._key.verify(signature, message)
                return
            except InvalidSignature:
                continue
        raise AuthFailed("signature does not match")
