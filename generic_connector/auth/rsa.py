"""``rsa``: an RSA signature over the request, SHA-256 with PKCS#1 v1.5 or PSS padding."""

from typing import Any, List, Mapping, Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from generic_connector.auth import AuthFailed, register
from generic_connector.auth._common import KeyFormatError, decode_text, env_key, key_problem
from generic_connector.auth._expressions import (
    SignedByExpressions,
    expression_key,
    timestamp_key,
)
from generic_connector.request import IncomingRequest

# Smaller keys are refused when the scheme is built (NIST SP 800-131A has disallowed 1024-bit
# RSA signatures since 2013).
MIN_KEY_BITS = 2048
_WHAT = "a PEM RSA public key or certificate"


def _paddings(name: str) -> List[padding.AsymmetricPadding]:
    """The paddings a signature is checked with: PSS with any salt length (cryptography 37 and
    later find it; before, the two lengths signers use: the digest's and the largest)."""
    if name == "pkcs1v15":
        return [padding.PKCS1v15()]
    auto = getattr(padding.PSS, "AUTO", None)
    salts = [auto] if auto is not None else [hashes.SHA256.digest_size, padding.PSS.MAX_LENGTH]
    return [padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt) for salt in salts]


@register
class RsaScheme(SignedByExpressions):
    """A signature (``given``) that the platform's RSA public key verifies over ``signed``.

    Only the public key is configured: whoever reads it cannot sign requests.
    """

    name = "rsa"
    schema = {
        "description": "an RSA signature (SHA-256, PKCS#1 v1.5 or PSS) checked with a public key",
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "public_key_env", "given"],
        "properties": {
            "type": {"const": "rsa", "description": "An RSA signature with SHA-256."},
            "public_key_env": env_key(
                "Environment variable holding the platform's RSA public key (at least 2048 "
                "bits) in PEM: -----BEGIN PUBLIC KEY-----, or a certificate."
            ),
            "padding": {
                "enum": ["pkcs1v15", "pss"],
                "description": "pkcs1v15 (RSASSA-PKCS1-v1_5, the default) or pss (RSASSA-PSS "
                "with MGF1-SHA-256, any salt length).",
            },
            "given": expression_key("The signature the request carries: header('X-Signature')."),
            "encoding": {
                "enum": ["base64", "hex"],
                "description": "How the signature is written: base64 (standard, padded; the "
                "default) or hex.",
            },
            "prefix": {
                "type": "string",
                "minLength": 1,
                "description": "Text before the signature in what given gives, removed; a "
                "signature without it is refused.",
            },
            "signed": expression_key(
                "What is signed, as UTF-8: join('.', [header('X-Timestamp'), raw_body()]). "
                "Default: the raw body, byte for byte."
            ),
            "timestamp": timestamp_key(),
        },
    }

    def __init__(self, section: Mapping[str, Any]) -> None:
        super().__init__(section, {"signed": section.get("signed")})
        self.encoding: str = section.get("encoding", "base64")
        self.prefix: str = section.get("prefix", "")
        self.paddings = _paddings(section.get("padding", "pkcs1v15"))
        self._key = self._read_key(section["public_key_env"])

    def _read_key(self, name: str) -> Optional[RSAPublicKey]:
        value = self.read_env(name)
        if value is None:
            return None
        try:
            key = _public_key(value)
        except KeyFormatError as error:
            self.unusable(key_problem(name, error, _WHAT))
            return None
        return key

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        scope = self.checked_scope(request, body, now)
        signature = self._signature(self.given(scope))
        if "signed" in self.expressions.expressions:
            signed = self.expressions.value("signed", scope)
            if not isinstance(signed, str):
                raise AuthFailed("signed gives no text for this request")
            message = signed.encode("utf-8", "surrogateescape")
        else:
            message = request.body
        if self._key is None:  # check() refuses before this
            raise AuthFailed("no usable public key")
        for scheme in self.paddings:
            try:
                self._key.verify(signature, message, scheme, hashes.SHA256())
                return
            except (InvalidSignature, ValueError):  # ValueError: no signature for this key
                continue
        raise AuthFailed("signature does not match")

    def _signature(self, given: str) -> bytes:
        signature = decode_text(given.strip(), self.encoding)
        if not signature:
            raise AuthFailed(f"the signature is not {self.encoding}")
        return signature


def _public_key(value: str) -> RSAPublicKey:
    """The RSA public key in PEM text (a public key or a certificate); KeyFormatError, which
    never quotes the value, otherwise."""
    data = value.strip().encode("utf-8")
    try:
        key: Any = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except (ValueError, UnsupportedAlgorithm):
            literal = "; its line breaks are written \\n" if "\\n" in value else ""
            raise KeyFormatError(
                "is not a PEM public key or certificate (-----BEGIN PUBLIC KEY----- ... "
                f"-----END PUBLIC KEY-----{literal})"
            ) from None
    if not isinstance(key, RSAPublicKey):
        raise KeyFormatError("is a public key of another kind than RSA")
    if key.key_size < MIN_KEY_BITS:
        raise KeyFormatError(f"is a {key.key_size}-bit key (at least {MIN_KEY_BITS} bits)")
    return key
