"""JMESPath functions beyond the standard ones, for what real webhook payloads need.

``header()``, ``query()``, ``body()``, ``raw_body()``, ``method()`` and ``path()`` read the
request being mapped; ``env()``, ``env_or()`` and ``jwt_sign()`` read the environment;
``now()``, ``random_hex()`` and ``uuid4()`` read the clock and the source of randomness. All
come from the ``Scope`` that each evaluation is given: compiled expressions are functions of
the value and the scope, and the functions that read it are marked ``@reads_scope`` and take
it after ``self``. The names of the environment variables are literals, known when the
mapping is compiled, so a missing variable stops start-up instead of failing a request, and
no request can choose which variable is read.
"""

import base64
import functools
import hashlib
import hmac
import html
import json
import math
import os
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, TypeVar

import jwt
import regex
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from jmespath import exceptions, functions

from generic_connector import defaults
from generic_connector.request import (
    IncomingRequest,
    bounded_int,
    no_constant,
    valid_unicode,
)
from generic_connector.xmlbody import XMLRefused, read_xml

Function = TypeVar("Function", bound=Callable[..., Any])

# What jwt_sign() signs with: HMAC with a shared secret, or RSA with a PEM private key.
JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256")

# regex_replace() runs its pattern with the `regex` module (a dependency of Rasa 3.6 itself,
# compatible with `re`), whose matching stops after a timeout: a pattern that backtracks
# catastrophically on some input ((x+x+)+y over "xxx...x", 2**n steps) fails the evaluation
# after this many seconds instead of holding the event loop for minutes. `re` has no timeout.
REGEX_TIMEOUT = 0.1
# parse_json() gives null for a string longer than the largest body a channel accepts, for a
# value nested deeper than this, for an integer of more than MAX_DIGITS (20) digits (turning a
# million digits into an int takes 4 s), for NaN/Infinity, numbers beyond a float's range and
# lone surrogates: as the request's own body, what it gives can be stored and sent as JSON.
PARSE_JSON_MAX_LENGTH = defaults.MAX_BODY
PARSE_JSON_MAX_NESTING = 100

# hmac(): the hash functions it keys, and how it writes the MAC.
HMAC_ALGORITHMS = ("sha1", "sha256", "sha512")
DIGEST_ENCODINGS = ("hex", "base64")
# now(): integer seconds or milliseconds since the epoch, or UTC time as 2026-12-07T05:33:49Z.
TIME_UNITS = ("s", "ms", "rfc3339")
# random_hex(): the most bytes one call gives (128 hexadecimal characters).
RANDOM_MAX_BYTES = 64
# aes_cbc_decrypt(): how the key is given, and the longest base64 ciphertext it decrypts (the
# largest body a channel accepts). "sha256": the key is the SHA-256 digest of the secret's
# UTF-8 bytes (Lark/Feishu's encrypt key).
AES_KEY_ENCODINGS = ("hex", "base64", "sha256")
AES_MAX_CIPHERTEXT = defaults.MAX_BODY
# wecom_decrypt(): WeChat/WeCom's message encryption pads to blocks of this many bytes (PKCS#7),
# and frames the message after this many random bytes and a 4-byte big-endian length.
WECOM_BLOCK = 32
WECOM_RANDOM = 16
# parse_xml() gives null for a string longer than the largest body a channel accepts.
PARSE_XML_MAX_LENGTH = defaults.MAX_BODY
# token(): what it renders to, for a name of the ``tokens`` section.
TOKEN_MARKER = "${{token:{}}}"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class Scope:
    """What the functions marked ``@reads_scope`` read; given to every evaluation.

    ``environ`` is ``os.environ`` unless another mapping is given; ``clock`` (seconds since
    the epoch, for now()) is ``time.time`` and ``random`` (n bytes, for random_hex() and
    uuid4()) is ``os.urandom`` unless others are given, as tests do.
    """

    __slots__ = ("request", "body", "environ", "clock", "random")

    def __init__(
        self,
        request: Optional[IncomingRequest] = None,
        body: Any = None,
        environ: Optional[Mapping[str, str]] = None,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.request = request
        self.body = body
        self.environ = os.environ if environ is None else environ
        self.clock = clock
        self.random = random


# The scope of evaluations without a request: header(), query(), body() and the like give null.
DEFAULT_SCOPE = Scope()


def reads_scope(function: Function) -> Function:
    """Mark a JMESPath function that takes the evaluation's ``Scope`` after ``self``."""
    function.reads_scope = True  # type: ignore[attr-defined]
    return function


def takes_scope(function: Callable[..., Any]) -> bool:
    """Whether ``function`` (a FUNCTION_TABLE entry's) was marked with ``reads_scope``."""
    return getattr(function, "reads_scope", False) is True


def varies(function: Function) -> Function:
    """Mark a JMESPath function that gives another value at each call (random_hex(),
    uuid4()): the compiler must not give two calls one call's value."""
    function.varies = True  # type: ignore[attr-defined]
    return function


def gives_another_value(function: Callable[..., Any]) -> bool:
    """Whether ``function`` (a FUNCTION_TABLE entry's) was marked with ``varies``."""
    return getattr(function, "varies", False) is True


class ConnectorFunctions(functions.Functions):
    """The standard functions plus the connector's own (documented in docs/configuration.md)."""

    @reads_scope
    @functions.signature({"types": ["string"]})
    def _func_header(self, scope: Scope, name: str) -> Optional[str]:
        """A header of the request (case-insensitive), or null."""
        request = scope.request
        return request.header(name) if request is not None else None

    @reads_scope
    @functions.signature({"types": ["string"]})
    def _func_query(self, scope: Scope, name: str) -> Optional[str]:
        """A query-string parameter of the request, or null."""
        request = scope.request
        return request.query_param(name) if request is not None else None

    @reads_scope
    @functions.signature()
    def _func_body(self, scope: Scope) -> Any:
        """The request's whole decoded body, whatever is being mapped."""
        return scope.body

    @reads_scope
    @functions.signature()
    def _func_raw_body(self, scope: Scope) -> Optional[str]:
        """The request's body as it came, as text (what signatures are computed over); null
        without a request or when the body is not valid UTF-8."""
        request = scope.request
        if request is None:
            return None
        try:
            return request.body.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @reads_scope
    @functions.signature()
    def _func_method(self, scope: Scope) -> Optional[str]:
        """The request's HTTP method (``POST``, ``GET``), or null without a request."""
        request = scope.request
        return request.method if request is not None else None

    @reads_scope
    @functions.signature({"types": ["string"]})
    def _func_path(self, scope: Scope, name: str) -> Optional[str]:
        """A parameter of the route the request matched, or null."""
        value = scope.request.path_param(name) if scope.request is not None else None
        return None if value is None else str(value)

    @reads_scope
    @functions.signature({"types": ["string"]})
    def _func_env(self, scope: Scope, name: str) -> Optional[str]:
        """An environment variable; the name is a literal (checked at start-up)."""
        return scope.environ.get(name)

    @reads_scope
    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_env_or(self, scope: Scope, name: str, default: str) -> str:
        """An environment variable, or ``default`` when it is unset or empty."""
        return scope.environ.get(name) or default

    @reads_scope
    @functions.signature({"types": ["object"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_jwt_sign(
        self, scope: Scope, claims: Dict[str, Any], key_env: str, algorithm: str
    ) -> str:
        """A JSON Web Token of ``claims``, signed with the key in the environment variable
        ``key_env`` (a secret for HS256/HS384/HS512, a PEM private key for RS256)."""
        if algorithm not in JWT_ALGORITHMS:
            raise exceptions.JMESPathError(
                f"jwt_sign() signs with {', '.join(JWT_ALGORITHMS)}, not {algorithm}"
            )
        key = scope.environ.get(key_env)
        if not key:
            raise exceptions.JMESPathError(f"jwt_sign(): {key_env} is not set")
        try:
            return jwt.encode(claims, key, algorithm=algorithm)
        except (jwt.PyJWTError, ValueError, TypeError):
            # Not the library's message: it could quote the key.
            raise exceptions.JMESPathError(
                f"jwt_sign(): {key_env} is not a valid {algorithm} key, "
                "or the claims cannot be signed"
            ) from None

    @reads_scope
    @functions.signature({"types": ["string"]})
    def _func_now(self, scope: Scope, unit: str) -> Any:
        """The scope's clock: integer seconds (``s``) or milliseconds (``ms``, to the nearest)
        since the epoch, or UTC time to the second as ``2026-12-07T05:33:49Z`` (``rfc3339``)."""
        _check_choice("now", "unit", unit, TIME_UNITS)
        seconds = scope.clock()
        if unit == "ms":
            return round(seconds * 1000)
        if unit == "s":
            return math.floor(seconds)
        return datetime.fromtimestamp(math.floor(seconds), timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )

    @varies
    @reads_scope
    @functions.signature({"types": ["number"]})
    def _func_random_hex(self, scope: Scope, count: float) -> str:
        """``count`` random bytes (1 to RANDOM_MAX_BYTES) in lowercase hexadecimal: twice as
        many characters."""
        if not 1 <= count <= RANDOM_MAX_BYTES or count != int(count):
            raise exceptions.JMESPathError(
                f"random_hex() takes a whole number of bytes from 1 to {RANDOM_MAX_BYTES}, "
                f"not {count}"
            )
        return scope.random(int(count)).hex()

    @varies
    @reads_scope
    @functions.signature()
    def _func_uuid4(self, scope: Scope) -> str:
        """A random (version 4) UUID, as ``2f1c0a3e-8b1d-4c52-9f0e-5d7a6b3c2e10``."""
        return str(uuid.UUID(bytes=scope.random(16), version=4))

    @functions.signature({"types": ["string"]})
    def _func_token(self, name: str) -> str:
        """The marker ``${token:name}`` that the sender replaces by the current access token of
        ``tokens.<name>`` (in outbound URLs and header values only; see ``tokens``)."""
        if not TOKEN_NAME.match(name):
            raise exceptions.JMESPathError(f"token() takes a token's name, not {name!r}")
        return TOKEN_MARKER.format(name)

    @functions.signature({"types": ["string", "null"]})
    def _func_parse_json(self, text: Optional[str]) -> Any:
        """The JSON value in a string; null if it is not JSON, or JSON a request's body could
        not hold (the limits above PARSE_JSON_MAX_LENGTH)."""
        if text is None or len(text) > PARSE_JSON_MAX_LENGTH:
            return None
        try:
            value = json.loads(
                text,
                parse_int=bounded_int,
                parse_float=_finite_float,
                parse_constant=no_constant,
            )
        except (ValueError, RecursionError):
            return None
        if _too_deep(text, value):
            return None
        if _ESCAPED_SURROGATE.search(text) and not valid_unicode(value):
            return None
        return value

    @functions.signature({"types": ["string", "null"]})
    def _func_parse_xml(self, text: Optional[str]) -> Any:
        """The XML document in a string, read as a ``request.format: xml`` body is
        (``{"xml": {"From": "u1", "Msg": {"@id": "7", "#text": "hi"}}}``, see xmlbody.py);
        null if it is not well-formed XML, has a document type declaration (and so any
        entity), nests deeper than xmlbody.MAX_DEPTH, holds more than xmlbody.MAX_ELEMENTS
        elements, or is longer than PARSE_XML_MAX_LENGTH characters."""
        if text is None or len(text) > PARSE_XML_MAX_LENGTH:
            return None
        try:
            # The text is already decoded: an encoding its declaration names is not applied.
            return read_xml(text.encode("utf-8"), encoding="UTF-8")
        except (XMLRefused, UnicodeEncodeError):  # a lone surrogate cannot be UTF-8
            return None

    @functions.signature({"types": ["string"]})
    def _func_lower(self, text: str) -> str:
        return text.lower()

    @functions.signature({"types": ["string"]})
    def _func_upper(self, text: str) -> str:
        return text.upper()

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, text: str, separator: str) -> list:
        return text.split(separator)

    @functions.signature({"types": ["string"]})
    def _func_trim(self, text: str) -> str:
        return text.strip()

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_regex_replace(self, text: str, pattern: str, replacement: str) -> str:
        """Python regular expression substitution, stopped after REGEX_TIMEOUT seconds."""
        try:
            return _regex(pattern).sub(replacement, text, timeout=REGEX_TIMEOUT)
        except TimeoutError:
            raise exceptions.JMESPathError(
                f"regex_replace() pattern {pattern!r} took more than {REGEX_TIMEOUT} s on a "
                f"string of {len(text)} characters (it backtracks catastrophically: avoid nested "
                "repetition such as (a+)+)"
            ) from None

    @functions.signature({"types": ["string"]})
    def _func_base64_encode(self, text: str) -> str:
        """The standard base64 (RFC 4648, padded) of the text's UTF-8 bytes."""
        return base64.b64encode(text.encode("utf-8")).decode("ascii")

    @functions.signature({"types": ["string", "null"]})
    def _func_base64_decode(self, encoded: Optional[str]) -> Optional[str]:
        """The UTF-8 text in standard, padded base64; null if it is not that."""
        if encoded is None:
            return None
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, a non-ASCII string, UnicodeDecodeError
            return None

    @functions.signature({"types": ["string"]})
    def _func_html_escape(self, text: str) -> str:
        """The text with &, <, >, " and ' written as HTML character references."""
        return html.escape(text, quote=True)

    @functions.signature({"types": ["string"]})
    def _func_html_unescape(self, text: str) -> str:
        """The text with HTML character references (&amp;, &#39;, &eacute;...) resolved."""
        return html.unescape(text)

    @functions.signature({"types": ["string"]})
    def _func_sha1(self, text: str) -> str:
        """The SHA-1 digest of the text's UTF-8 bytes, in lowercase hexadecimal (what WeChat
        signs its webhooks with)."""
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    @functions.signature({"types": ["string"]})
    def _func_sha256(self, text: str) -> str:
        """The SHA-256 digest of the text's UTF-8 bytes, in lowercase hexadecimal."""
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @functions.signature({"types": ["string"]})
    def _func_sha512(self, text: str) -> str:
        """The SHA-512 digest of the text's UTF-8 bytes, in lowercase hexadecimal."""
        return hashlib.sha512(text.encode("utf-8")).hexdigest()

    @functions.signature(
        {"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]}
    )
    def _func_hmac(self, algorithm: str, key: str, data: str, encoding: str) -> str:
        """The HMAC (RFC 2104) of ``data``'s UTF-8 bytes keyed with ``key``'s, with SHA-1,
        SHA-256 or SHA-512, in lowercase hexadecimal or standard padded base64."""
        _check_choice("hmac", "algorithm", algorithm, HMAC_ALGORITHMS)
        _check_choice("hmac", "encoding", encoding, DIGEST_ENCODINGS)
        mac = hmac.new(key.encode("utf-8"), data.encode("utf-8"), algorithm).digest()
        return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode("ascii")

    @functions.signature(
        {"types": ["string", "null"]},
        {"types": ["string"]},
        {"types": ["string", "null"]},
        {"types": ["string"]},
    )
    def _func_aes_cbc_decrypt(
        self, ciphertext: Optional[str], key: str, iv: Optional[str], key_encoding: str
    ) -> Optional[str]:
        """The UTF-8 text in base64 ``ciphertext``, encrypted with AES-256-CBC and PKCS#7
        padding. The key is 32 bytes in ``hex`` or ``base64``, or the ``sha256`` of the UTF-8
        secret; the IV is base64, or (null) the ciphertext's first 16 bytes. Null when the
        ciphertext or IV is not base64, the padding or the text is not valid, or the
        ciphertext is longer than AES_MAX_CIPHERTEXT; a key that is not 32 bytes fails."""
        _check_choice("aes_cbc_decrypt", "key_encoding", key_encoding, AES_KEY_ENCODINGS)
        secret = _aes_key(key, key_encoding)
        if ciphertext is None or len(ciphertext) > AES_MAX_CIPHERTEXT:
            return None
        data, vector = _b64(ciphertext), _b64(iv) if iv is not None else b""
        if data is None or vector is None:
            return None
        if iv is None:
            data, vector = data[16:], data[:16]
        if len(vector) != 16 or not data or len(data) % 16:
            return None
        decryptor = Cipher(algorithms.AES(secret), modes.CBC(vector)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        try:
            padded = decryptor.update(data) + decryptor.finalize()
            return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")
        except ValueError:  # bad padding, UnicodeDecodeError
            return None

    @functions.signature(
        {"types": ["string", "null"]}, {"types": ["string"]}, {"types": ["string"]}
    )
    def _func_wecom_decrypt(
        self, ciphertext: Optional[str], encoding_aes_key: str, receive_id: str
    ) -> Optional[str]:
        """The message in WeChat/WeCom's encrypted ``Encrypt`` or ``echostr``: AES-256-CBC
        with the key base64-decoded from the 43-character EncodingAESKey (its "=" left out),
        the key's first 16 bytes as IV, PKCS#7 padding to WECOM_BLOCK-byte blocks, and the
        plaintext framed as WECOM_RANDOM random bytes, the message's length in 4 bytes
        (big-endian), the message and the receive id (the corp id; "" for some bots). Null
        when the ciphertext is not base64 of whole blocks, the padding or the length is not
        valid, the receive id is not ``receive_id`` (a message for another corp), the
        message is not UTF-8, or the ciphertext is longer than AES_MAX_CIPHERTEXT; a key
        that is not 32 bytes fails. Verify the request's signature first: whether the
        answer differs tells a sender whether its padding was right."""
        secret = _aes_key(encoding_aes_key, "base64", "wecom_decrypt")
        if ciphertext is None or len(ciphertext) > AES_MAX_CIPHERTEXT:
            return None
        data = _b64(ciphertext)
        if not data or len(data) % WECOM_BLOCK:
            return None
        decryptor = Cipher(algorithms.AES(secret), modes.CBC(secret[:16])).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= WECOM_BLOCK or plain[-pad:] != bytes([pad]) * pad:
            return None
        plain = plain[:-pad]
        start = WECOM_RANDOM + 4
        if len(plain) < start:
            return None
        end = start + int.from_bytes(plain[WECOM_RANDOM:start], "big")
        try:
            if end > len(plain) or plain[end:] != receive_id.encode("utf-8"):
                return None
            return plain[start:end].decode("utf-8")
        except UnicodeError:  # a receive id with a lone surrogate, a message that is not UTF-8
            return None


def _check_choice(function: str, argument: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise exceptions.JMESPathError(
            f"{function}() argument {argument} is one of {', '.join(choices)}, not {value!r}"
        )


def _b64(text: str) -> Optional[bytes]:
    """The bytes in standard, padded base64; None if it is not that."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, a non-ASCII string
        return None


def _aes_key(key: str, encoding: str, function: str = "aes_cbc_decrypt") -> bytes:
    """The 32 bytes of an AES-256 key; a JMESPathError (naming ``function``) that does not
    quote it otherwise."""
    if encoding == "sha256":
        return hashlib.sha256(key.encode("utf-8")).digest()
    try:
        if encoding == "hex":
            secret = bytes.fromhex(key)
        else:  # base64, its padding optional (a 43-character key such as WeCom's has none)
            secret = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
    except ValueError:  # binascii.Error, a non-ASCII string
        secret = b""
    if len(secret) != 32:
        raise exceptions.JMESPathError(
            f"{function}(): the key is not 32 bytes in {encoding} (AES-256)"
        )
    return secret


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    """The compiled pattern (a ``regex.Pattern``: its methods take ``timeout=``)."""
    return regex.compile(pattern)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: JSON has no infinity, and JSON writers refuse it
        raise ValueError(f"{text[:30]} is beyond a float's range")
    return number


def _too_deep(text: str, value: Any) -> bool:
    """Whether ``value`` (decoded from ``text``) nests more than PARSE_JSON_MAX_NESTING lists
    and objects."""
    # Each level opens a bracket: text with few of them (most) is not walked.
    if text.count("[") + text.count("{") <= PARSE_JSON_MAX_NESTING:
        return False
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > PARSE_JSON_MAX_NESTING:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# An escaped UTF-16 surrogate, as in request.py: a lone one decodes to a str that cannot be
# encoded again.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")


FUNCTIONS = ConnectorFunctions()
SIGNATURES: Dict[str, Any] = {
    name: spec["signature"] for name, spec in FUNCTIONS.FUNCTION_TABLE.items()
}

# Functions that read the request being mapped (the rest of the scope is the environment).
REQUEST_FUNCTIONS = {"header", "query", "body", "raw_body", "method", "path"}
# Functions given the scope: jmespath's interpreter cannot call them.
SCOPE_FUNCTIONS = {
    name for name, spec in FUNCTIONS.FUNCTION_TABLE.items() if takes_scope(spec["function"])
}
