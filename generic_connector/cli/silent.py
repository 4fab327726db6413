"""Silent templates: answer and outbound expressions reading a field that is never there.

A JMESPath path that finds nothing gives null, and null is a valid answer: ``{reply:
join(' ', messages[].txt)}`` answers ``{"reply": ""}`` and nothing is logged. ``validate``
finds such paths in the templates whose data it knows:

- what the data always is: the names at the top of each template's data (``{messages,
  request, sender}`` for answers; ``{message, recipient, event, metadata, reply_to}`` for
  outbound), the keys of Rasa's bot messages and of the reply address;
- what the test cases give: each expression's data is recorded while the mapping's test cases
  run (with their replies, and with one bot message of each kind), and a path whose parent is
  there but that is null in every one of them is reported.

Each is a warning (``always-null``) located at the template's key; ``rasa run`` never sees it.
"""

import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from generic_connector.answers import ResponseChoice, ResponseTemplate
from generic_connector.compiler import Tree
from generic_connector.config import ChannelConfig, locate
from generic_connector.errors import Finding
from generic_connector.expressions import Expression
from generic_connector.outbound import PRESENCE, TURN, RequestTemplate

# The keys of the bot messages Rasa hands a channel (its REST channel's answer).
BOT_MESSAGE_KEYS = (
    "text", "buttons", "quick_replies", "image", "attachment", "custom", "elements",
    "recipient_id",
)  # fmt: skip
# The keys of the reply address outbound templates read as ``reply_to``.
REPLY_TO_KEYS = ("user", "conversation", "thread")
# The data each kind of template is evaluated over.
ANSWER = ("messages", "request", "sender")
MESSAGE = ("message", "recipient", "event", "metadata", "reply_to")
ROLES: Dict[str, Tuple[str, ...]] = {
    "answer": ANSWER,
    "message": MESSAGE,
    TURN: ("messages", "recipient", "event", "metadata", "reply_to", "batch"),
    PRESENCE: MESSAGE,
}
# Data kept per expression while the test cases run.
MAX_CONTEXTS = 200

# A path's steps: ("field", name), or ("each", how it was written: [], [*], [0], [?...]).
Step = Tuple[str, str]
Path = Tuple[Step, ...]
_PROJECTIONS = ("projection", "filter_projection", "value_projection", "flatten")


@dataclass(frozen=True)
class Read:
    """A path an expression reads from its data; ``guarded``: an alternative (``a || b``), a
    condition or a comparison, where null is an expected value."""

    path: Path
    guarded: bool


@dataclass(frozen=True)
class Template:
    """One expression of an answer or outbound template: where it is written (its key path in
    the channel's document), what data it is evaluated over (``ROLES``), whether that data
    holds the answers of earlier ``steps``, and the request or answer template it belongs to
    (``group``, an id(): its expressions are evaluated over the same data, so the data one of
    them saw is the others' too, even when an earlier one failed)."""

    keys: Tuple[Any, ...]
    expression: Expression
    role: str
    group: int
    steps: bool = False

    @property
    def names(self) -> Tuple[str, ...]:
        return ROLES[self.role] + (("steps",) if self.steps else ())


def reads(tree: Tree) -> List[Read]:
    """The field paths an expression reads from its data: chains of names, indexes and
    projections rooted at the data's top (``messages[].text``, ``metadata.channel``), and those
    inside projections, filters and multi-selects, continued from the element they apply to."""
    found: List[Read] = []
    _walk(tree, (), False, found)
    return found


def _walk(node: Any, base: Optional[Path], guarded: bool, out: List[Read]) -> Optional[Path]:
    """Record the paths under ``node`` evaluated over the value at ``base`` (None: not a path
    from the data's top); return the path of the node's own value, or None."""
    if not isinstance(node, dict):
        return None
    kind, children = node.get("type"), node.get("children") or []
    if kind == "field":
        if base is None:
            return None
        path = base + (("field", str(node["value"])),)
        out.append(Read(path, guarded))
        return path
    if kind in ("current", "identity"):
        return base
    if kind == "subexpression":  # a.b.c: one node, its parts in order
        part = base
        for child in children:
            part = _walk(child, part, guarded, out)
        return part
    if kind == "index_expression":
        left = _walk(children[0], base, guarded, out)
        right = children[1]
        if left is None:
            return None
        if right.get("type") == "index":
            return left + (("each", f"[{right['value']}]"),)
        if right.get("type") == "slice":
            return left + (("each", "[:]"),)
        return None
    if kind == "flatten":
        left = _walk(children[0], base, guarded, out)
        return None if left is None else left + (("each", "[]"),)
    if kind == "projection":
        elements = _elements(children[0], base, guarded, out)
        return _walk(children[1], elements, guarded, out)
    if kind == "filter_projection":
        elements = _elements(children[0], base, guarded, out, "[?]")
        _walk(children[2], elements, True, out)
        return _walk(children[1], elements, guarded, out)
    if kind == "pipe":
        left = _walk(children[0], base, guarded, out)
        after_projection = children[0].get("type") in _PROJECTIONS
        return _walk(children[1], None if after_projection else left, guarded, out)
    if kind == "or_expression" or kind == "and_expression":
        _walk(children[0], base, True, out)
        _walk(children[1], base, guarded or kind == "or_expression", out)
        return None
    if kind in ("not_expression", "comparator"):
        for child in children:
            _walk(child, base, True, out)
        return None
    if kind == "function_expression":
        for child in children:
            _walk(child, base, guarded or node.get("value") == "not_null", out)
        return None
    if kind in ("multi_select_dict", "multi_select_list", "key_val_pair"):
        for child in children:
            _walk(child, base, guarded, out)
        return None
    for child in children:  # a literal, an expref, an object's values: not paths from the top
        _walk(child, None, guarded, out)
    return None


def _elements(
    node: Dict[str, Any], base: Optional[Path], guarded: bool, out: List[Read], shown: str = "[*]"
) -> Optional[Path]:
    """The path of the elements a projection applies to: ``a[]`` and ``a[:2]`` give them
    already; ``a[*]`` and ``a[?...]`` apply to the elements of ``a``."""
    path = _walk(node, base, guarded, out)
    if path is None or node.get("type") == "flatten" or _is_slice(node):
        return path
    return path + (("each", shown),)


def _is_slice(node: Dict[str, Any]) -> bool:
    children = node.get("children") or []
    return node.get("type") == "index_expression" and children[1].get("type") == "slice"


def shown(path: Path) -> str:
    """A path as it is written: ``messages[].text``."""
    text = ""
    for kind, value in path:
        text += value if kind == "each" else (f".{value}" if text else value)
    return text


# --- The templates of a channel -------------------------------------------------------------


def templates(config: ChannelConfig, document: Dict[str, Any]) -> List[Template]:
    """Every answer and outbound expression evaluated over a reply's data, with its key path."""
    found: List[Template] = []
    response = config.response
    if isinstance(response, ResponseChoice):
        for index, template in enumerate(response.templates):
            found += _answer(("response", index), template)
    else:
        found += _answer(("response",), response)
    if config.defer is not None:
        found += _answer(("defer", "response"), config.defer.response)
    for index, handshake in enumerate(config.handshakes):
        found += _answer(("handshakes", index, "response"), handshake.response)
    outbound = config.outbound
    section = document.get("outbound") or {}
    if outbound is not None and isinstance(section, dict):
        named: List[Tuple[str, Optional[RequestTemplate]]] = [*outbound.templates.items()]
        named += [(TURN, outbound.turn), (PRESENCE, outbound.presence)]
        for name, request in named:
            if request is not None:
                role = name if name in (TURN, PRESENCE) else "message"
                found += _request(name, request, section, role)
    return found


def _answer(keys: Tuple[Any, ...], template: ResponseTemplate) -> List[Template]:
    group = id(template)
    found = [Template(keys + ("body",), template.body, "answer", group)]
    if template.when is not None:
        found.append(Template(keys + ("when",), template.when, "answer", group))
    for name, expression in template.headers.items():
        found.append(Template(keys + ("headers", name), expression, "answer", group))
    return found


def _request(
    name: str, template: RequestTemplate, section: Dict[str, Any], role: str
) -> List[Template]:
    """A request template's url, headers and body (each located where it is written: the
    template's own key, or outbound.defaults), and those of its steps."""
    own: Dict[str, Any] = section[name] if isinstance(section.get(name), dict) else {}
    steps = bool(template.steps)

    def at(written: Dict[str, Any], keys: Tuple[Any, ...], key: str, *more: str) -> Tuple[Any, ...]:
        inner = written.get(key)
        if key in written and (not more or (isinstance(inner, dict) and more[0] in inner)):
            return keys + (key, *more)
        return ("outbound", "defaults", key, *more)

    found: List[Template] = []
    specs: List[Any] = own["steps"] if isinstance(own.get("steps"), list) else []
    parts: List[Tuple[RequestTemplate, Dict[str, Any], Tuple[Any, ...]]] = [
        (template, own, ("outbound", name))
    ]
    for index, step in enumerate(template.steps):
        spec = specs[index] if index < len(specs) and isinstance(specs[index], dict) else {}
        parts.append((step, spec, ("outbound", name, "steps", index)))
    for request, written, keys in parts:
        group = id(request)
        found.append(Template(at(written, keys, "url"), request.url, role, group, steps))
        for header, value in request.headers.items():
            where = at(written, keys, "headers", header)
            found.append(Template(where, value, role, group, steps))
        if request.body is not None:
            found.append(Template(at(written, keys, "body"), request.body, role, group, steps))
    return found


# --- The data of the test cases -------------------------------------------------------------


@contextmanager
def recording(found: Sequence[Template]) -> Iterator[Dict[int, List[Any]]]:
    """While the test cases run: the data each template is evaluated over, by its ``group``
    (each new value once)."""
    groups = {id(template.expression): template.group for template in found}
    seen: Dict[int, List[Any]] = {template.group: [] for template in found}
    search = Expression.search

    def recorded(self: Expression, data: Any, scope: Any = None) -> Any:
        kept = seen.get(groups.get(id(self), 0))
        if kept is not None and len(kept) < MAX_CONTEXTS and not any(d is data for d in kept):
            kept.append(data)
        return search(self, data, scope)

    Expression.search = recorded  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Expression.search = search  # type: ignore[method-assign]


# --- Paths that are always null -------------------------------------------------------------


def findings(
    config: ChannelConfig,
    document: Dict[str, Any],
    found: Sequence[Template],
    data: Dict[int, List[Any]],
) -> List[Finding]:
    """An ``always-null`` warning for each path a template reads that is never there."""
    result: List[Finding] = []
    said = set()
    for template in found:
        contexts = data.get(template.group, [])
        for read in reads(template.expression.tree):
            problem = _silent(template, read, contexts)
            if problem is None or (template.keys, problem[0]) in said:
                continue
            said.add((template.keys, problem[0]))
            message, hint = problem[1], problem[2]
            where = locate(document, list(template.keys)) or (None, None, None)
            key = _key(config.name, template.keys)
            result.append(Finding("always-null", key, message, hint, *where, severity="warning"))
    return result


def _key(name: str, keys: Tuple[Any, ...]) -> str:
    text = name
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text


def _silent(template: Template, read: Read, contexts: List[Any]) -> Optional[Tuple[str, str, str]]:
    """(the path, message, hint) when ``read`` is null wherever its parent is, else None."""
    path = read.path
    if not path or path[0][0] != "field":
        return None
    root = path[0][1]
    if root == "null":  # a name, null wherever it is read: what was meant
        return None
    if root in ("true", "false") and len(path) == 1:
        hint = f"JMESPath reads it as a name; the literal is `{root}`"
        return root, f"{root} is null for every reply", hint
    if root not in template.names:
        data = "{" + ", ".join(template.names) + "}"
        close = difflib.get_close_matches(root, template.names, n=1)
        hint = f"the data is {data}" + (f"; did you mean {close[0]}?" if close else "")
        return root, f"{root} is null for every reply", hint
    known = _known_keys(template, path)
    if known is not None:
        at, keys, what = known
        name = path[at][1]
        if path[at][0] == "field" and name not in keys:
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f"{what} have {', '.join(keys)}" + (
                f"; did you mean {close[0]}?" if close else ""
            )
            return shown(path[: at + 1]), f"{shown(path[: at + 1])} is null for every reply", hint
        path = path[:at]  # below a known key: data of the bot's or the platform's own
    if read.guarded or not contexts or root == "steps":  # steps: sample answers, if any
        return None
    return _null_in_every_case(path, contexts)


def _known_keys(template: Template, path: Path) -> Optional[Tuple[int, Tuple[str, ...], str]]:
    """(the position of the step whose keys are known, those keys, what has them), for a path
    into Rasa's bot messages or the reply address; None for any other path."""
    root = path[0][1]
    bot_messages = root == "messages" and template.role in ("answer", TURN)
    if bot_messages and len(path) > 2 and path[1][0] == "each":
        return 2, BOT_MESSAGE_KEYS, "bot messages"
    if root == "message" and template.role == "message" and len(path) > 1:
        return 1, BOT_MESSAGE_KEYS, "bot messages"
    if root == "reply_to" and len(path) > 1:
        return 1, REPLY_TO_KEYS, "reply addresses"
    return None


def _null_in_every_case(path: Path, contexts: List[Any]) -> Optional[Tuple[str, str, str]]:
    """The first field of ``path`` that is null in every context where the value it is read
    from is there (and that value was there at least once). The names at the top are always
    there (and may be null: ``event`` for what Rasa sends on its own)."""
    values = [data.get(path[0][1]) for data in contexts if isinstance(data, dict)]
    values = [value for value in values if value is not None]
    for index, (kind, name) in enumerate(path[1:], 1):
        if kind == "each":
            values = [item for value in values if isinstance(value, list) for item in value]
            continue
        parents = [value for value in values if value is not None]
        values = [value.get(name) for value in parents if isinstance(value, dict)]
        values = [value for value in values if value is not None]
        if parents and not values:
            return _reported(path[: index + 1], parents)
        if not values:
            return None
    return None


def _reported(path: Path, parents: List[Any]) -> Tuple[str, str, str]:
    text, name = shown(path), path[-1][1]
    parent = shown(path[:-1]) or "the data"
    objects = [value for value in parents if isinstance(value, dict)]
    if not objects:
        kinds = sorted({_json_type(value) for value in parents})
        hint = f"{parent} is {' or '.join(kinds)} there, not an object"
        if kinds == ["an array"]:
            hint += f": write {shown(path[:-1])}[].{name}"
        return text, f"{text} is null in every test case", hint
    keys = sorted({str(key) for value in objects for key in value})
    listed = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    close = difflib.get_close_matches(name, keys, n=1)
    hint = f"{parent} has {listed}" if keys else f"{parent} is always empty"
    hint += f"; did you mean {close[0]}?" if close else ""
    return text, f"{text} is null in every test case", hint


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
