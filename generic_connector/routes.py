"""A channel's routes: the methods and paths under ``/webhooks/<name>/`` it serves.

``POST /webhook`` carries messages, and so does every route in ``routes:``; handshakes answer
their own method and path. A path may hold parameters, one segment each
(``/transactions/{txn_id}``), which expressions read with ``path('txn_id')``. The channel
answers a method a path does not serve with a JSON 405, and a path it does not serve with a
JSON 404.
"""

import functools
import re
from typing import Dict, Iterable, List, Optional, Tuple

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Methods whose request carries a body the channel decodes.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT = ("POST", "/webhook")

_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Route = Tuple[str, str]  # (method, path template)


def parameters(template: str) -> List[str]:
    """The names of a path template's parameters, in order."""
    return _PARAMETER.findall(template)


def sanic_path(template: str) -> str:
    """The template in Sanic's route syntax: ``{txn_id}`` → ``<txn_id:str>``."""
    return _PARAMETER.sub(r"<\1:str>", template)


@functools.lru_cache(maxsize=256)
def _pattern(template: str) -> "re.Pattern[str]":
    parts = _PARAMETER.split(template)
    literal = [re.escape(part) for part in parts[::2]]
    names = parts[1::2]
    regex = literal[0] + "".join(f"(?P<{n}>[^/]+)" + lit for n, lit in zip(names, literal[1:]))
    return re.compile(regex)


def match(routes: Iterable[Route], method: str, path: str) -> Optional[Tuple[str, Dict[str, str]]]:
    """The template serving ``method`` on a concrete ``path``, and the parameters; None when
    no route serves it (for test cases and the dry run; the channel has Sanic route)."""
    for route_method, template in routes:
        found = _pattern(template).fullmatch(path)
        if found is not None and route_method == method:
            return template, found.groupdict()
    return None
