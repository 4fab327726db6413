"""Handshakes: requests answered from a template without Rasa (verification challenges).

A handshake is tried on the decoded body, which is null when the request has no body at all
(a validation request that carries its token in a header): its ``when`` and ``verify`` read
headers and the query then.
"""

import functools
import hmac
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from generic_connector.answers import Rendered, ResponseTemplate
from generic_connector.compiler import Compiled, compile_expression_tree
from generic_connector.expressions import (
    EvaluationError,
    Expression,
    compile_expression,
    truthy,
)
from generic_connector.functions import DEFAULT_SCOPE, FUNCTIONS, Scope


@dataclass(frozen=True)
class Handshake:
    """``handshakes[]``: a method and path, an optional condition, a check and an answer."""

    name: str
    method: str
    path: str
    when: Optional[Expression]
    verify: Optional[Expression]
    response: ResponseTemplate

    def matches(self, method: str, path: str, body: Any, scope: Optional[Scope] = None) -> bool:
        if (method, path) != (self.method, self.path):
            return False
        return self.when is None or truthy(self.when.search(body, scope))

    def verified(self, body: Any, scope: Optional[Scope] = None) -> bool:
        """False when ``verify`` is false: the request is refused with nothing echoed.

        ``a == b`` of two strings (a sent verify token and the configured one) is compared in
        constant time, on UTF-8 bytes: how long the answer takes does not tell how much of a
        guessed token was right."""
        if self.verify is None:
            return True
        sides = _equality_sides(self.verify.source)
        if sides is not None:
            try:
                left, right = (
                    side(body, DEFAULT_SCOPE if scope is None else scope) for side in sides
                )
            except Exception as error:  # as Expression.search words it
                raise EvaluationError(
                    self.verify.source, str(error) or type(error).__name__
                ) from None
            if isinstance(left, str) and isinstance(right, str):
                return hmac.compare_digest(_utf8(left), _utf8(right))
        return truthy(self.verify.search(body, scope))

    def answer(self, body: Any, scope: Optional[Scope] = None) -> Rendered:
        """The answer, its body and headers over ``{messages: [], request: body, sender:
        null}``: ``header('Validation-Token')`` echoes a request's header."""
        return self.response.render([], body, None, scope)

    def expressions(self) -> List[Expression]:
        found = [self.when, self.verify]
        return [e for e in found if e is not None] + self.response.expressions()


@functools.lru_cache(maxsize=256)
def _equality_sides(source: str) -> Optional[Tuple[Compiled, Compiled]]:
    """The two sides of an expression that is ``a == b``, compiled; None for any other."""
    tree = compile_expression(source).parsed
    if tree.get("type") != "comparator" or tree.get("value") != "eq":
        return None
    left, right = tree["children"]
    return compile_expression_tree(left, FUNCTIONS), compile_expression_tree(right, FUNCTIONS)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")
