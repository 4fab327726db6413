"""Expressions over the request in an ``auth`` section: their schema, scope and timestamps.

An expression's environment variables are the scheme's secrets: read when the scheme is built
(an unset or empty one makes it refuse every request, and start-up stop, naming it) and the
only variables it sees. ``now()`` reads the time the check is given. A failing expression is
a refusal whose reason names the key, never the values (a type error would quote them, and
they may hold a secret).
"""

import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Mapping, Optional, Tuple

from generic_connector.auth import AuthFailed, AuthScheme
from generic_connector.auth._common import check_window
from generic_connector.compiler import Tree
from generic_connector.expressions import EvaluationError, Expression, nodes
from generic_connector.functions import Scope
from generic_connector.request import IncomingRequest

#: How a timestamp is written: Unix seconds or milliseconds (digits, or a JSON integer), or
#: RFC 3339 (``2026-12-07T05:33:49Z``, ``2026-12-07T06:33:49.250+01:00``).
TIME_FORMATS = ("unix", "unix_ms", "rfc3339")
# Whole ASCII digits only: float() would take "NaN", "inf", "1e3" and " 12".
_DIGITS = {"unix": re.compile(r"[0-9]{1,12}"), "unix_ms": re.compile(r"[0-9]{1,15}")}
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Nodes whose first child is evaluated over their input, the others over what it gives.
_CHAINS = {
    "subexpression", "index_expression", "pipe", "projection", "value_projection",
    "filter_projection", "flatten",
}  # fmt: skip
# Nodes that read their input itself.
_INPUT = {"field", "current", "identity"}


def expression_key(description: str) -> Dict[str, Any]:
    """Schema of a key holding an expression over the request."""
    return {"type": "string", "minLength": 1, "format": "jmespath", "description": description}


def timestamp_key() -> Dict[str, Any]:
    """Schema of ``timestamp``: where the request's time is, how it is written, its window."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["value"],
        "description": "The time the request was signed, refused when further than tolerance "
        "from now (either way) or not written as format says. Sign it too: put the same value "
        "in what is signed.",
        "properties": {
            "value": expression_key(
                "An expression giving the timestamp: header('X-Timestamp'), query('timestamp')."
            ),
            "format": {
                "enum": list(TIME_FORMATS),
                "description": "unix (whole seconds, the default), unix_ms (whole milliseconds) "
                "or rfc3339 (2026-12-07T05:33:49Z).",
            },
            "tolerance": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Seconds the timestamp may differ from now, default 300.",
            },
        },
    }


def reads_body(expression: Expression) -> bool:
    """Whether ``expression`` reads the decoded body: with body(), or a path over the data it
    is evaluated over (``xml.Encrypt``, ``@``). Such a scheme is checked once the body is
    decoded; ``raw_body()``, ``header()`` and the like need not wait."""
    called = any(
        node["type"] == "function_expression" and node["value"] == "body"
        for node in nodes(expression.tree)
    )
    return called or _reads_input(expression.tree)


def _reads_input(node: Tree) -> bool:
    kind = node["type"]
    if kind in _INPUT:
        return True
    if kind == "expref":  # a function applies it to the values it is given
        return False
    children = [child for child in node.get("children", ()) if isinstance(child, dict)]
    if kind in _CHAINS:
        return bool(children) and _reads_input(children[0])
    return any(_reads_input(child) for child in children)


class RequestExpressions:
    """A section's expressions by key (``expected``, ``given``, ``timestamp.value``...)."""

    def __init__(self, scheme: AuthScheme, sources: Mapping[str, Optional[str]]) -> None:
        self.expressions = {
            key: Expression(source) for key, source in sources.items() if source is not None
        }
        required = sorted({n for e in self.expressions.values() for n in e.env_names})
        optional = sorted(
            {n for e in self.expressions.values() for n in e.optional_env_names} - set(required)
        )
        self.environ: Dict[str, str] = {}
        for name in required:
            value = scheme.read_env(name)
            if value is not None:
                self.environ[name] = value
        for name in optional:
            value = os.environ.get(name)
            if value:
                self.environ[name] = value
        #: Whether any of them reads the decoded body (the scheme's ``needs_body``).
        self.reads_body = any(reads_body(e) for e in self.expressions.values())

    def env_names(self, key: str) -> Tuple[str, ...]:
        """The variables the expression of ``key`` requires."""
        expression = self.expressions.get(key)
        return tuple(sorted(expression.env_names)) if expression else ()

    def scope(self, request: IncomingRequest, body: Any, now: float) -> Scope:
        """What the expressions read for this request: its headers, query, body and time."""
        return Scope(request, body, self.environ, clock=lambda: now)

    def value(self, key: str, scope: Scope) -> Any:
        """The value of the expression of ``key`` over the decoded body (``{}`` before it is
        decoded: over null, a list such as ``[header('A'), raw_body()]`` would be null too);
        AuthFailed if it fails."""
        data = {} if scope.body is None else scope.body
        try:
            return self.expressions[key].search(data, scope)
        except EvaluationError:
            raise AuthFailed(f"{key} could not be evaluated on this request") from None


class Timestamp:
    """``timestamp``: the request's time, checked against the time the check is given."""

    def __init__(self, section: Mapping[str, Any]) -> None:
        self.source: str = section["value"]
        self.written: str = section.get("format", "unix")
        self.tolerance: float = section.get("tolerance", 300)

    def check(self, expressions: RequestExpressions, scope: Scope, now: float) -> None:
        """AuthFailed unless the timestamp is written as ``format`` and within ``tolerance``."""
        value = expressions.value("timestamp.value", scope)
        check_window(parse_time(value, self.written), now, self.tolerance)


def parse_time(value: Any, written: str) -> float:
    """Seconds since the epoch of a timestamp written as ``written`` (one of TIME_FORMATS);
    AuthFailed otherwise."""
    if written in _DIGITS:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            number = value
        elif isinstance(value, str) and _DIGITS[written].fullmatch(value):
            number = int(value)
        else:
            raise AuthFailed(f"no valid timestamp ({_WRITTEN[written]})")
        return number / 1000 if written == "unix_ms" else float(number)
    return _rfc3339(value)


_WRITTEN = {
    "unix": "Unix time in whole seconds",
    "unix_ms": "Unix time in whole milliseconds",
    "rfc3339": "RFC 3339 date and time with an offset",
}


def _rfc3339(value: Any) -> float:
    found = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise AuthFailed(f"no valid timestamp ({_WRITTEN['rfc3339']})")
    offset = found["offset"]
    if offset in ("Z", "z"):
        zone = timezone.utc
    else:
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        sign = -1 if offset[0] == "-" else 1
        if hours > 23 or minutes > 59:
            raise AuthFailed(f"no valid timestamp ({_WRITTEN['rfc3339']})")
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime.strptime(f"{found['date']}T{found['time']}", "%Y-%m-%dT%H:%M:%S")
    except ValueError:  # 2026-02-30, 25:00:00
        raise AuthFailed(f"no valid timestamp ({_WRITTEN['rfc3339']})") from None
    fraction = found["fraction"] or "0"
    return moment.replace(tzinfo=zone).timestamp() + int(fraction) / 10 ** len(fraction)


class SignedByExpressions(AuthScheme):
    """What the ``expression`` and ``rsa`` schemes share: their expressions (``given`` and the
    scheme's own), the ``timestamp`` check and the ``prefix`` of the given signature."""

    def __init__(self, section: Mapping[str, Any], sources: Mapping[str, Optional[str]]) -> None:
        super().__init__(section)
        stamp = section.get("timestamp")
        self.timestamp: Optional[Timestamp] = Timestamp(stamp) if stamp else None
        source = self.timestamp.source if self.timestamp else None
        sources = {"given": section["given"], **sources, "timestamp.value": source}
        self.expressions = RequestExpressions(self, sources)
        self.needs_body = self.expressions.reads_body
        self.prefix: str = section.get("prefix", "")

    def checked_scope(self, request: IncomingRequest, body: Any, now: float) -> Scope:
        """The expressions' scope for this request, once its timestamp is in the window."""
        scope = self.expressions.scope(request, body, now)
        if self.timestamp is not None:
            self.timestamp.check(self.expressions, scope, now)
        return scope

    def given(self, scope: Scope) -> str:
        """The signature the request carries, without ``prefix``; AuthFailed without one."""
        given = self.expressions.value("given", scope)
        if not isinstance(given, str) or not given:
            raise AuthFailed("no signature (given gives none)")
        if self.prefix:
            if not given.startswith(self.prefix):
                raise AuthFailed(f"no signature starting with {self.prefix!r}")
            given = given[len(self.prefix) :]
        return given
