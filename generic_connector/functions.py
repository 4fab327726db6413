"""JMESPath functions beyond the standard ones, for what real webhook payloads need.

``header()``, ``query()`` and ``body()`` read the request being mapped; ``env()``,
``env_or()`` and ``jwt_sign()`` read the environment. Both come from the ``Scope`` that each
evaluation is given: compiled expressions are functions of the value and the scope, and the
functions that read it are marked ``@reads_scope`` and take it after ``self``. The names of
the environment variables are literals, known when the mapping is compiled, so a missing
variable stops start-up instead of failing a request, and no request can choose which
variable is read.
"""

import base64
import functools
import hashlib
import html
import json
import math
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional, TypeVar

import jwt
import regex
from jmespath import exceptions, functions

from generic_connector import defaults
from generic_connector.request import (
    IncomingRequest,
    bounded_int,
    no_constant,
    valid_unicode,
)

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


class Scope:
    """What header(), query(), body(), env(), env_or() and jwt_sign() read; given to every
    evaluation. ``environ`` is ``os.environ`` unless another mapping is given."""

    __slots__ = ("request", "body", "environ")

    def __init__(
        self,
        request: Optional[IncomingRequest] = None,
        body: Any = None,
        environ: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.request = request
        self.body = body
        self.environ = os.environ if environ is None else environ


# The scope of evaluations without a request: header(), query() and body() give null.
DEFAULT_SCOPE = Scope()


def reads_scope(function: Function) -> Function:
    """Mark a JMESPath function that takes the evaluation's ``Scope`` after ``self``."""
    function.reads_scope = True  # type: ignore[attr-defined]
    return function


def takes_scope(function: Callable[..., Any]) -> bool:
    """Whether ``function`` (a FUNCTION_TABLE entry's) was marked with ``reads_scope``."""
    return getattr(function, "reads_scope", False) is True


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
    def _func_sha256(self, text: str) -> str:
        """The SHA-256 digest of the text's UTF-8 bytes, in lowercase hexadecimal."""
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
REQUEST_FUNCTIONS = {"header", "query", "body"}
# Functions given the scope: jmespath's interpreter cannot call them.
SCOPE_FUNCTIONS = {
    name for name, spec in FUNCTIONS.FUNCTION_TABLE.items() if takes_scope(spec["function"])
}
