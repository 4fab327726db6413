"""Handshakes: requests answered from a template without Rasa (verification challenges)."""

from dataclasses import dataclass
from typing import Any, List, Optional

from generic_connector.answers import Rendered, ResponseTemplate
from generic_connector.expressions import Expression, truthy
from generic_connector.functions import Scope


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
        """False when ``verify`` is false: the request is refused with nothing echoed."""
        return self.verify is None or truthy(self.verify.search(body, scope))

    def answer(self, body: Any, scope: Optional[Scope] = None) -> Rendered:
        return self.response.render([], body, None, scope)

    def expressions(self) -> List[Expression]:
        found = [self.when, self.verify, self.response.body]
        return [e for e in found if e is not None]
