"""What several schemes share: schema pieces, timestamps, signed templates, comparisons."""

import base64
import binascii
import hmac
import re
import string
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from generic_connector.auth import AuthConfigError, AuthFailed, AuthScheme
from generic_connector.errors import GenericConnectorError
from generic_connector.request import IncomingRequest

ENV_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"


def env_key(description: str) -> Dict[str, Any]:
    """Schema of a key naming an environment variable."""
    return {
        "type": "string",
        "pattern": ENV_NAME_PATTERN,
        "description": description,
        "x-hint": "the name of an environment variable, not its value",
    }


def template_key(fields: Iterable[str], description: str) -> Dict[str, Any]:
    """Schema of a signed-content template: text with only the given ``{placeholders}``."""
    names = "|".join(sorted(fields))
    return {
        "type": "string",
        "pattern": rf"^(?:[^{{}}]|\{{\{{|\}}\}}|\{{(?:{names})\}})*$",
        "description": description,
        "x-hint": "placeholders: " + ", ".join("{" + f + "}" for f in sorted(fields)),
    }


def needs_header(field: str, header_key: str) -> Dict[str, Any]:
    """Schema rule: a template using ``{field}`` must say which header carries it."""
    return {
        "if": {
            "required": ["signed"],
            "properties": {"signed": {"pattern": r"\{" + field + r"\}"}},
        },
        "then": {"required": [header_key]},
    }


def equal(sent: bytes, expected: bytes) -> bool:
    """Constant-time comparison (the time taken does not tell how much of a guess was right)."""
    return hmac.compare_digest(sent, expected)


def as_bytes(text: str) -> bytes:
    """A header value as bytes, whatever characters it holds."""
    return text.encode("utf-8", "surrogateescape")


# Unix time in whole seconds, ASCII digits only: float() would take "NaN", "inf", "1e3" and
# " 12", and a NaN age compares false with every window, so it passed the freshness check.
_UNIX_TIME = re.compile(r"[0-9]{1,12}")


def parse_unix_time(value: Optional[str], header: str) -> int:
    """The timestamp a header carries; AuthFailed unless it is whole seconds in ASCII digits."""
    if value is None or not _UNIX_TIME.fullmatch(value):
        raise AuthFailed(f"no valid {header} header (Unix time in whole seconds)")
    return int(value)


def check_window(stamp: float, now: float, max_age: float) -> None:
    """AuthFailed unless ``stamp`` is within ``max_age`` seconds of ``now``, either way."""
    if not abs(now - stamp) <= max_age:  # written so that a NaN is outside the window too
        raise AuthFailed(f"timestamp outside the allowed {max_age:g} s window")


class SignedTemplate:
    """What a signature covers, built as bytes.

    The template's text is encoded as UTF-8 and each placeholder's value inserted as bytes:
    ``{body}`` is the raw body exactly as received, so different bodies never share a
    signature (decoding first, with replacement characters, made them share one).
    """

    def __init__(self, template: str, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        self.parts: List[Tuple[bytes, Optional[str]]] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as error:  # a single { or }
            raise AuthConfigError(f"signed: {error}") from None
        for literal, name, spec, conversion in parsed:
            if name is not None and (name not in allowed or spec or conversion):
                raise AuthConfigError(f"signed: {{{name}}} is not one of {sorted(allowed)}")
            self.parts.append((literal.encode("utf-8"), name))
        self.fields = {name for _, name in self.parts if name}

    def render(self, values: Mapping[str, bytes]) -> bytes:
        return b"".join(literal + (values[name] if name else b"") for literal, name in self.parts)


# More signatures than this in one header are ignored (each costs a verification).
MAX_SIGNATURES = 16


class SignedRequest:
    """The keys of a signature over the request, shared by ``hmac`` and ``ed25519``.

    ``header`` carries the signature(s), ``prefix`` precedes each, ``separator`` splits several;
    ``signed`` is the template over ``{body}``, ``{timestamp}`` (from ``timestamp_header``,
    checked against ``max_age``) and ``{id}`` (from ``id_header``), plus ``extra`` fields.
    """

    def __init__(self, section: Mapping[str, Any], extra: Iterable[str] = ()) -> None:
        self.header: str = section["header"]
        self.prefix: str = section.get("prefix", "")
        self.separator: Optional[str] = section.get("separator")
        self.timestamp_header: Optional[str] = section.get("timestamp_header")
        self.id_header: Optional[str] = section.get("id_header")
        self.max_age: float = section.get("max_age", 300)
        self.template = SignedTemplate(
            section.get("signed", "{body}"), {"body", "timestamp", "id", *extra}
        )
        for field, key in (("timestamp", "timestamp_header"), ("id", "id_header")):
            if field in self.template.fields and not section.get(key):
                raise AuthConfigError(f"signed uses {{{field}}}: {key} must name its header")

    def signatures(self, request: IncomingRequest) -> List[str]:
        """The signatures sent, without their prefix; AuthFailed if there is none."""
        sent = request.header(self.header)
        if not sent:
            raise AuthFailed(f"no {self.header} header")
        candidates = sent.split(self.separator) if self.separator else [sent]
        found = [c[len(self.prefix) :] for c in candidates if c.startswith(self.prefix)]
        if not found:
            raise AuthFailed(f"no signature starting with {self.prefix!r} in {self.header}")
        return found[:MAX_SIGNATURES]

    def message(
        self, request: IncomingRequest, now: float, extra: Optional[Mapping[str, bytes]] = None
    ) -> bytes:
        """The signed bytes for this request; AuthFailed for a missing or stale timestamp or id."""
        values: Dict[str, bytes] = {"body": request.body, **(extra or {})}
        if self.timestamp_header:
            raw = request.header(self.timestamp_header)
            check_window(parse_unix_time(raw, self.timestamp_header), now, self.max_age)
            values["timestamp"] = as_bytes(raw or "")
        if "id" in self.template.fields:
            sent_id = request.header(self.id_header or "")
            if not sent_id:
                raise AuthFailed(f"no {self.id_header} header")
            values["id"] = as_bytes(sent_id)
        return self.template.render(values)


def signature_keys(extra_fields: Iterable[str] = (), about_extra: str = "") -> Dict[str, Any]:
    """Schema properties of ``SignedRequest``'s keys; ``about_extra`` explains extra fields."""
    fields = {"body", "timestamp", "id", *extra_fields}
    return {
        "header": {"type": "string", "minLength": 1, "description": "The signature header."},
        "prefix": {
            "type": "string",
            "description": "Text before each signature: 'sha256=', 'v0=', 'v1,', 'v1a,'.",
        },
        "separator": {
            "type": "string",
            "minLength": 1,
            "description": "The header holds several signatures separated by this "
            "(Standard Webhooks: ' '); any one of them may match.",
        },
        "signed": template_key(
            fields,
            "What is signed, default '{body}' (the raw body bytes). Placeholders: "
            + ", ".join("{" + f + "}" for f in sorted(fields))
            + "; {{ and }} are literal braces."
            + about_extra,
        ),
        "timestamp_header": {
            "type": "string",
            "minLength": 1,
            "description": "Header with the Unix time (whole seconds) of the request; a time "
            "further than max_age from now, or not made of digits, is refused.",
        },
        "max_age": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Seconds a timestamp may differ from now, default 300.",
        },
        "id_header": {
            "type": "string",
            "minLength": 1,
            "description": "Header with the message id that is signed (Standard Webhooks: "
            "webhook-id).",
        },
    }


class KeyFormatError(GenericConnectorError, ValueError):
    """Key material of the wrong form. The message is a predicate ("is not hex (...)") that
    says what is wrong and never quotes the value."""


KEY_ENCODINGS = ("text", "hex", "base64", "whsec", "whpk", "pem")
_SPACE = re.compile(r"\s")


def decode_key(value: str, encoding: str, size: Optional[int] = None) -> bytes:
    """The bytes of key material written in ``encoding``, checked: the one place keys are
    decoded, so that a malformed one is found when the channel is built, not by a 401.

    ``text``: the UTF-8 bytes. ``hex``: an even number of hex digits. ``base64``: strict
    standard base64; ``whsec``/``whpk``: the same after an optional ``whsec_``/``whpk_``
    (Standard Webhooks). ``pem``: a PEM private key without a passphrase (its PEM bytes).
    ``size``: the number of bytes the key must have. KeyFormatError says what is wrong.
    """
    if encoding not in KEY_ENCODINGS:
        raise ValueError(f"unknown key encoding {encoding!r}")
    spaced = "; it holds white space or a line break" if _SPACE.search(value) else ""
    if encoding == "text":
        raw = value.encode("utf-8")
    elif encoding == "hex":
        if not _HEX.fullmatch(value):
            raise KeyFormatError(f"is not hex (an even number of the digits 0-9 and a-f{spaced})")
        raw = bytes.fromhex(value)
    elif encoding == "pem":
        return _pem_private_key(value)
    else:
        prefix = f"{encoding}_"
        if encoding != "base64" and value.startswith(prefix):
            value = value[len(prefix) :]
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):  # ValueError: characters beyond ASCII
            written = "base64" if encoding == "base64" else f"{prefix}<base64>"
            raise KeyFormatError(f"is not valid base64 ({written}{spaced})") from None
    if not raw:
        raise KeyFormatError("decodes to nothing")
    if size is not None and len(raw) != size:
        raise KeyFormatError(f"decodes to {len(raw)} bytes, not {size}")
    return raw


def _pem_private_key(value: str) -> bytes:
    data = value.encode("utf-8")
    try:
        load_pem_private_key(data, password=None)
    except TypeError:  # a passphrase is needed
        raise KeyFormatError(
            "is an encrypted PEM key (give the key without a passphrase)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError(
            "is not a PEM private key (-----BEGIN PRIVATE KEY----- ... -----END PRIVATE KEY-----)"
        ) from None
    return data


def key_problem(name: str, error: KeyFormatError, what: str = "") -> str:
    """The reason a scheme records for a malformed key: names the variable, not its value.

    Worded "the value of environment variable NAME ...": problems that start "environment
    variable" are taken for unset or empty ones by the start-up check and left out."""
    about = f" ({what})" if what else ""
    return f"the value of environment variable {name}{about} {error}"


def read_key(
    scheme: AuthScheme, name: str, encoding: str, size: Optional[int] = None, what: str = ""
) -> Optional[bytes]:
    """The decoded key in variable ``name``; None, and the scheme unusable (start-up stops,
    ``validate --check-env`` reports it), if it is unset, empty or malformed."""
    value = scheme.read_env(name)
    if value is None:
        return None
    try:
        return decode_key(value, encoding, size)
    except KeyFormatError as error:
        scheme.unusable(key_problem(name, error, what))
        return None


def decode_base64(value: str, name: str, scheme: AuthScheme) -> Optional[bytes]:
    """Strict base64 of an environment value; None (the scheme unusable) if it is not."""
    try:
        return decode_key(value, "base64")
    except KeyFormatError as error:
        scheme.unusable(key_problem(name, error))
        return None


_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def decode_text(value: str, encoding: str) -> Optional[bytes]:
    """Hex or base64 text as bytes, or None if it is not that (no whitespace, no leniency)."""
    if encoding == "hex":
        return bytes.fromhex(value) if _HEX.fullmatch(value) else None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
