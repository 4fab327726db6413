"""Webhook authentication: schemes registered by name, each with its own schema fragment.

A scheme is a subclass of ``AuthScheme`` in a module of this package, registered with
``@register``; every public module here is imported when the package is, so adding a scheme
is one new module (plus its tests). ``build_auth`` turns a channel's validated ``auth`` section
into a scheme (a list of sections into ``AnyOf``); ``auth_schema`` is the JSON schema of that
section, assembled from the registered fragments.

Schemes read their secrets from the environment when they are built. An unset or empty
secret makes the scheme refuse every request (and is listed by ``env_names``, so start-up
fails first). ``check`` raises ``AuthFailed`` (the pipeline answers 401, or the section's
``refusal``; the reason is for the log only) or ``AuthUnavailable`` (the request cannot be
checked now; 503, so the platform retries).

Every section may have ``refusal`` (``register`` adds it to each scheme's schema): the status
(401 or 403) and body of the answer to a request that fails; in a list of sections, only the
first may have it, and it answers for all.
"""

import importlib
import json
import os
import pkgutil
import time
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Type, TypeVar, Union

import jsonschema

from generic_connector.answers import Rendered, ResponseTemplate
from generic_connector.compiler import ExpressionError
from generic_connector.errors import GenericConnectorError, RenderError
from generic_connector.expressions import EvaluationError, Expression, compile_expression
from generic_connector.functions import Scope
from generic_connector.request import IncomingRequest

__all__ = [
    "AUTH_SCHEMES",
    "AnyOf",
    "AuthConfigError",
    "AuthFailed",
    "AuthScheme",
    "AuthUnavailable",
    "REFUSAL_SCHEMA",
    "auth_schema",
    "build_auth",
    "register",
]


class AuthFailed(GenericConnectorError):
    """The request is not authentic; the message says why, for the log only (never the caller)."""


class AuthUnavailable(GenericConnectorError):
    """The request cannot be checked now (a key server is down): answer 503, not 401."""


class AuthConfigError(GenericConnectorError, ValueError):
    """An ``auth`` section that no scheme can be built from (unknown type, invalid keys)."""


#: ``refusal``: how a request that fails authentication is answered; a key of every section.
REFUSAL_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "How a request that fails authentication is answered, default 401 with "
    '{"error": "unauthorized"}. In a list of sections, only the first may have it; it '
    "answers for all.",
    "properties": {
        "status": {
            "enum": [401, 403],
            "description": "The status, default 401 (basic auth's WWW-Authenticate goes with "
            "401 only).",
        },
        "body": {
            "type": "string",
            "minLength": 1,
            "format": "jmespath",
            "description": "An expression giving the answer's body, a literal most often "
            "(`{\"errcode\": 40001}` or 'fail'); it reads `request` (the decoded body, null "
            "when refused before decoding), header() and query(). Default "
            '{"error": "unauthorized"}.',
        },
        "content_type": {
            "type": "string",
            "minLength": 1,
            "description": "The body's content type, default application/json (text/plain "
            "answers a string as it is).",
        },
    },
}


class AuthScheme:
    """One way to authenticate a webhook request, built from its ``auth`` section.

    Subclasses set ``name`` and ``schema`` (the JSON schema of their whole section, standalone),
    read their environment in ``__init__`` through ``read_env`` and implement ``verify``.
    ``refusal_status`` and ``refusal_answer`` say how a refused request is answered.
    """

    name: ClassVar[str] = ""
    schema: ClassVar[Dict[str, Any]] = {}
    #: True only when the check needs the decoded body (a token in a body field); every
    #: other scheme runs before the body is decoded.
    needs_body: bool = False
    #: Headers for the 401 answer (basic auth's ``WWW-Authenticate``), or None.
    challenge: Optional[Dict[str, str]] = None

    def __init__(self, section: Mapping[str, Any]) -> None:
        self.section = dict(section)
        self._env_names: List[str] = []
        self._problems: List[str] = []
        refusal = section.get("refusal") or {}
        #: The status of the answer to a request that fails (AuthFailed): 401 or 403.
        self.refusal_status: int = refusal.get("status", 401)
        #: ``refusal.body``, or None: the default JSON error body.
        self.refusal_body: Optional[Expression] = None
        self._refusal: Optional[ResponseTemplate] = None
        if "body" in refusal:
            self._refusal = ResponseTemplate(
                body=refusal["body"],
                content_type=refusal.get("content_type"),
                status=self.refusal_status,
            )
            self.refusal_body = self._refusal.body

    def refusal_headers(self) -> Dict[str, str]:
        """Headers of the answer to a refused request: the challenge, with 401 only."""
        return dict(self.challenge or {}) if self.refusal_status == 401 else {}

    def refusal_answer(self, body: Any, scope: Optional[Scope] = None) -> Optional[Rendered]:
        """The answer to a refused request when ``refusal.body`` is configured: that body over
        ``{request: body}`` (``body`` the decoded body, or None before decoding), with
        ``refusal_status`` and ``refusal_headers``. None without one, or when it cannot be
        evaluated or written: the default JSON error is answered then."""
        if self._refusal is None:
            return None
        try:
            rendered = self._refusal.render([], body, None, scope)
        except (EvaluationError, RenderError):
            return None
        return rendered._replace(headers=self.refusal_headers())

    def copy_refusal(self, other: "AuthScheme") -> None:
        """Answer refused requests as ``other`` does (a list answers as its first section)."""
        self.refusal_status = other.refusal_status
        self.refusal_body = other.refusal_body
        self._refusal = other._refusal

    def env_names(self) -> List[str]:
        """The environment variables this scheme needs; start-up fails if one is unset or empty."""
        return list(self._env_names)

    def problems(self) -> List[str]:
        """Why this scheme refuses every request (unset, empty or malformed secrets), if it does."""
        return list(self._problems)

    def read_env(self, name: str) -> Optional[str]:
        """The value of a variable the scheme needs; None, and every request refused, if it is
        unset or empty (an empty secret would give an empty-key HMAC or ``Basic Og==``)."""
        if name not in self._env_names:
            self._env_names.append(name)
        value = os.environ.get(name)
        if not value:
            self.unusable(f"environment variable {name} is {'empty' if value == '' else 'not set'}")
            return None
        return value

    def unusable(self, reason: str) -> None:
        """Record why no request can pass (a secret that cannot be used)."""
        self._problems.append(reason)

    async def check(self, request: IncomingRequest, body: Any, now: Optional[float] = None) -> None:
        """Return if the request is authentic; raise AuthFailed or AuthUnavailable otherwise.

        ``body`` is the decoded body for schemes that set ``needs_body`` (else None); ``now``
        is the current Unix time (the pipeline's clock, or a test case's ``time``).
        """
        if self._problems:
            raise AuthFailed("; ".join(self._problems))
        await self.verify(request, body, time.time() if now is None else now)

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        """The scheme's own check, once its secrets are known to be usable."""
        raise NotImplementedError

    def __repr__(self) -> str:  # never shows a secret: only the configured keys
        return f"<{type(self).__name__} {self.section!r}>"


#: Every registered scheme by its ``type`` name.
AUTH_SCHEMES: Dict[str, Type[AuthScheme]] = {}

_Scheme = TypeVar("_Scheme", bound=Type[AuthScheme])


def register(cls: _Scheme) -> _Scheme:
    """Class decorator: make ``cls`` the scheme for ``auth: {type: cls.name}``; its schema
    gains the keys every section has (``refusal``)."""
    if not cls.name or cls.name in AUTH_SCHEMES:
        raise ValueError(f"auth scheme name {cls.name!r} is empty or already registered")
    declared = cls.schema.get("properties", {}).get("type", {}).get("const")
    if declared != cls.name or cls.schema.get("additionalProperties") is not False:
        raise ValueError(
            f"auth scheme {cls.name!r}: its schema must have type {{'const': {cls.name!r}}} "
            "and additionalProperties false"
        )
    schema = json.loads(json.dumps(cls.schema))  # a copy: the written dict is not changed
    schema["properties"].setdefault("refusal", REFUSAL_SCHEMA)
    jsonschema.Draft7Validator.check_schema(schema)
    cls.schema = schema
    AUTH_SCHEMES[cls.name] = cls
    return cls


class AnyOf(AuthScheme):
    """A list of sections: the request passes if any scheme passes it (tried in order).

    If one of them reads a body field, all are checked once the body is decoded: the pipeline
    checks a scheme either before decoding or after it.
    """

    name = "any of"

    def __init__(self, schemes: Sequence[AuthScheme]) -> None:
        super().__init__({})
        self.schemes = list(schemes)
        self.needs_body = any(scheme.needs_body for scheme in self.schemes)
        self.challenge = next((s.challenge for s in self.schemes if s.challenge), None)
        if self.schemes:
            self.copy_refusal(self.schemes[0])

    def env_names(self) -> List[str]:
        names: List[str] = []
        for scheme in self.schemes:
            names += [name for name in scheme.env_names() if name not in names]
        return names

    def problems(self) -> List[str]:
        return [problem for scheme in self.schemes for problem in scheme.problems()]

    async def check(self, request: IncomingRequest, body: Any, now: Optional[float] = None) -> None:
        reasons = []
        unavailable = False
        for scheme in self.schemes:
            try:
                await scheme.check(request, body, now)
                return
            except AuthFailed as reason:
                reasons.append(f"{scheme.name}: {reason}")
            except AuthUnavailable as reason:
                unavailable = True
                reasons.append(f"{scheme.name}: {reason}")
        summary = "no scheme accepted the request (" + "; ".join(reasons) + ")"
        # A scheme that could not check may have accepted it: let the platform retry.
        raise (AuthUnavailable if unavailable else AuthFailed)(summary)

    def __repr__(self) -> str:
        return f"<AnyOf {self.schemes!r}>"


def build_auth(section: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]) -> AuthScheme:
    """The scheme for an ``auth`` section; a list of sections gives ``AnyOf`` them.

    The section is checked against its scheme's schema again (the loader has done so, but the
    dry run and tests build schemes directly); AuthConfigError says what is wrong. An unknown
    ``type`` is an error, never a fall-through to some other scheme.
    """
    if isinstance(section, Sequence) and not isinstance(section, (str, bytes)):
        if not section:
            raise AuthConfigError("auth: an empty list of schemes would accept no request")
        schemes = [_build_one(item, f"auth[{index}]") for index, item in enumerate(section)]
        later = [index for index, item in enumerate(section) if index and "refusal" in item]
        if later:
            raise AuthConfigError(f"auth[{later[0]}].refusal: {_ONE_REFUSAL}")
        return schemes[0] if len(schemes) == 1 else AnyOf(schemes)
    return _build_one(section, "auth")


def _build_one(section: Any, where: str) -> AuthScheme:
    if not isinstance(section, Mapping):
        raise AuthConfigError(
            f"{where}: must be a mapping with a type, got {type(section).__name__}"
        )
    kind = section.get("type")
    cls = AUTH_SCHEMES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(AUTH_SCHEMES))
        raise AuthConfigError(f"{where}.type: unknown auth scheme {kind!r} (known: {known})")
    errors = sorted(
        jsonschema.Draft7Validator(cls.schema, format_checker=_FORMATS).iter_errors(dict(section)),
        key=lambda error: list(error.absolute_path),
    )
    if errors:
        messages: List[str] = []
        for error in errors:
            path = "".join(f".{part}" for part in error.absolute_path)
            message = f"{where}{path}: {_explain(error)}"
            if message not in messages:
                messages.append(message)
        raise AuthConfigError("; ".join(messages))
    return cls(section)


_FORMATS = jsonschema.FormatChecker()
_FORMATS.checks("jmespath", raises=ExpressionError)(
    lambda value: not isinstance(value, str) or bool(compile_expression(value))
)
_ONE_REFUSAL = "only the first section of a list may have refusal (it answers for all)"


def _explain(error: jsonschema.ValidationError) -> str:
    """The error in words: a combinator's own message repeats the whole section, its hint does
    not."""
    if error.validator == "format" and isinstance(error.cause, ExpressionError):
        return f"expression does not compile: {error.cause}"
    hint = error.schema.get("x-hint", "") if isinstance(error.schema, dict) else ""
    if hint and error.validator in ("anyOf", "oneOf", "not"):
        return hint
    return f"{error.message} ({hint})" if hint else error.message


def auth_schema() -> Dict[str, Any]:
    """The JSON schema of the ``auth`` key: one registered scheme's section, or a non-empty list.

    Each scheme's fragment applies through ``if``/``then`` on its ``type``, so a validator
    reports the keys of the scheme that was meant, not of every scheme.
    """
    names = sorted(AUTH_SCHEMES)
    one = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {
                "enum": names,
                "description": "; ".join(
                    f"{name}: {AUTH_SCHEMES[name].schema.get('description', '')}" for name in names
                ),
            }
        },
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": AUTH_SCHEMES[name].schema,
            }
            for name in names
        ],
    }
    # Every item is one section; after the first, none has refusal.
    first_only = {
        "items": [{}],
        "additionalItems": {"properties": {"refusal": {"not": {}, "x-hint": _ONE_REFUSAL}}},
    }
    schema = {
        "description": (
            "Webhook authentication, checked before the body is mapped; a failure answers 401 "
            "(or as refusal says). A list of schemes accepts a request that any of them accepts."
        ),
        "if": {"type": "array"},
        "then": {"type": "array", "minItems": 1, "items": one, "allOf": [first_only]},
        "else": one,
    }
    return json.loads(json.dumps(schema))  # a copy: callers may change it


def _import_schemes() -> None:
    """Import every public module of this package, so that their schemes register."""
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda found: found.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_schemes()
