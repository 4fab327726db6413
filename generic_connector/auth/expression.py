"""``expression``: a signature computed by an expression over the request (WeCom, WeChat, any
platform whose scheme the fixed ones do not cover)."""

from typing import Any, Mapping

from generic_connector.auth import AuthFailed, register
from generic_connector.auth._common import as_bytes, equal
from generic_connector.auth._expressions import (
    SignedByExpressions,
    expression_key,
    timestamp_key,
)
from generic_connector.request import IncomingRequest

# `expected` must read a secret: without env('NAME') anyone could compute it. The loader's
# check of the text; the scheme checks the parsed expression (a quoted 'env(' passes this).
_READS_ENV = r"\benv\s*\("


@register
class ExpressionScheme(SignedByExpressions):
    """The signature the request carries (``given``) must equal the one ``expected`` computes.

    Both are expressions over the request (``header()``, ``query()``, ``raw_body()``, the
    decoded body's fields) compared in constant time as UTF-8 bytes; a side that gives null,
    an empty string or anything but a string refuses the request. The check runs before the
    body is decoded unless an expression reads it (``body()`` or a path such as
    ``xml.Encrypt``).
    """

    name = "expression"
    schema = {
        "description": "a signature computed by an expression over the request",
        "type": "object",
        "additionalProperties": False,
        "required": ["type", "expected", "given"],
        "properties": {
            "type": {
                "const": "expression",
                "description": "A signature expected by an expression, compared with the one "
                "the request gives.",
            },
            "expected": {
                **expression_key(
                    "The signature the request must carry, computed with the secret: "
                    "hmac('sha256', env('SECRET'), raw_body(), 'hex'). Secrets only through "
                    "env('NAME'), whose name is a literal."
                ),
                "pattern": _READS_ENV,
                "x-hint": "expected must use a secret: env('NAME')",
            },
            "given": expression_key(
                "The signature the request carries: header('X-Signature'), query('msg_signature')."
            ),
            "prefix": {
                "type": "string",
                "minLength": 1,
                "description": "Text before the signature in what given gives ('sha256='), "
                "removed before comparing; a signature without it is refused.",
            },
            "timestamp": timestamp_key(),
        },
    }

    def __init__(self, section: Mapping[str, Any]) -> None:
        super().__init__(section, {"expected": section["expected"]})
        if not self.expressions.env_names("expected"):
            self.unusable("expected reads no secret (env('NAME')): anyone could compute it")

    async def verify(self, request: IncomingRequest, body: Any, now: float) -> None:
        scope = self.checked_scope(request, body, now)
        given = self.given(scope)
        expected = self.expressions.value("expected", scope)
        if not isinstance(expected, str) or not expected:
            raise AuthFailed("expected gives no signature for this request")
        if not equal(as_bytes(given), as_bytes(expected)):
            raise AuthFailed("signature does not match")
