"""JMESPath expressions turned into plain Python functions, once, at start-up.

``jmespath`` interprets a parsed expression by walking its tree on every search; for the small
expressions mappings use, that walk costs more than the work. ``compile_expression_tree``
writes the common node kinds as straight-line Python and ``compile_node`` turns the rest into
closures, with the interpreter's semantics (checked against the official JMESPath compliance
suite in ``tests/test_compiler.py``); node kinds neither covers go to the interpreter, so
every expression ``jmespath`` accepts still works.
"""

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from jmespath import functions as jmespath_functions
from jmespath.visitor import Options, TreeInterpreter, _equals, _is_actual_number, _is_comparable

Compiled = Callable[[Any], Any]


def is_false(value: Any) -> bool:
    """JMESPath falsiness: false, null, empty strings, lists and objects (not 0).

    Of JSON's values those are the ones Python finds false, bar the numbers 0 and 0.0.
    """
    return not value and type(value) is not int and type(value) is not float


def compile_expression_tree(
    node: Dict[str, Any], functions: jmespath_functions.Functions
) -> Compiled:
    """One Python function for a whole expression.

    Field access, ``||``, ``&&``, ``!``, comparisons and ``{...}`` objects become straight-line
    Python source; other node kinds become closures (``compile_node``) that it calls.
    """
    source = _Source(functions)
    source.line(f"return {source.emit(node, 'value')}")
    return source.function()


def compile_mapping(
    rules: Sequence[Dict[str, Any]],
    fields: Sequence[Optional[Dict[str, Any]]],
    functions: jmespath_functions.Functions,
) -> Compiled:
    """One Python function for all of a mapping's expressions over an event.

    It returns the index of the first rule that is true (the rest is not evaluated), or else
    the tuple of the fields' values (None where a field has no expression). Paths the
    expressions share, such as ``message.chat`` in ``message.chat.id`` and
    ``message.chat.type``, are looked up once.
    """
    source = _Source(functions)
    for index, rule in enumerate(rules):
        source.line(f"if not {_falsy(source.emit(rule, 'value'))}:")
        source.line(f"    return {index}")
    values = [source.emit(field, "value") if field else "None" for field in fields]
    source.line(f"return ({', '.join(values)},)")
    return source.function()


def _get(value: Any, name: str) -> Any:
    try:
        return value.get(name)
    except AttributeError:
        return None


def _falsy(name: str) -> str:
    # As is_false: a true value is told at the first test, with nothing built to compare with.
    return f"(not {name} and type({name}) is not int and type({name}) is not float)"


class _Source:
    """Python source for an expression tree: one statement per node, into temporaries."""

    def __init__(self, functions: jmespath_functions.Functions) -> None:
        self.functions = functions
        self.lines: List[str] = []
        self.constants: Dict[str, Any] = {"_get": _get, "_equals": _equals}
        self.depth = 1
        self.count = 0
        # (node, input) -> the name holding its value, for values computed unconditionally.
        self.computed: Dict[Tuple[str, str], str] = {}

    def temporary(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def function(self) -> Compiled:
        namespace = dict(self.constants)
        source = "def evaluate(value):\n" + "\n".join(self.lines)
        exec(source, namespace)  # noqa: S102 - source built from parsed expressions
        return namespace["evaluate"]

    def emit(self, node: Dict[str, Any], value: str) -> str:
        """Statements that evaluate ``node`` over the variable ``value``; the result's name.

        Expressions are pure, so a node already computed over the same input at the top
        level (not inside a branch) is not computed again.
        """
        key = (json.dumps(node, sort_keys=True, default=repr), value)
        if key in self.computed:
            return self.computed[key]
        unconditional = self.depth == 1
        result = self._emit(node, value)
        if unconditional:
            self.computed[key] = result
        return result

    def _emit(self, node: Dict[str, Any], value: str) -> str:
        kind = node["type"]
        if kind == "field":
            name, result = repr(node["value"]), self.temporary()
            # Absent parents (None) are common and cheap to rule out; other types are rare.
            self.line(
                f"{result} = {value}.get({name}) if type({value}) is dict "
                f"else None if {value} is None else _get({value}, {name})"
            )
            return result
        if kind in ("subexpression", "index_expression", "pipe"):
            for child in node["children"]:
                value = self.emit(child, value)
            return value
        if kind in ("current", "identity"):
            return value
        if kind == "literal":
            return self.constant(node["value"])
        if kind in ("or_expression", "and_expression"):
            left, right = node["children"]
            result = self.temporary()
            self.line(f"{result} = {self.emit(left, value)}")
            test = _falsy(result) if kind == "or_expression" else f"not {_falsy(result)}"
            self.line(f"if {test}:")
            self.depth += 1
            self.line(f"{result} = {self.emit(right, value)}")
            self.depth -= 1
            return result
        if kind == "not_expression":
            operand, result = self.emit(node["children"][0], value), self.temporary()
            number = f"(type({operand}) is int or type({operand}) is float)"
            self.line(f"{result} = False if {number} and {operand} == 0 else not {operand}")
            return result
        if kind == "comparator" and node["value"] in ("eq", "ne"):
            left = self.emit(node["children"][0], value)
            right = self.emit(node["children"][1], value)
            result = self.temporary()
            negate = "not " if node["value"] == "ne" else ""
            self.line(f"{result} = {negate}_equals({left}, {right})")
            return result
        if kind == "multi_select_dict":
            result = self.temporary()
            self.line(f"if {value} is None:")
            self.line(f"    {result} = None")
            self.line("else:")
            self.depth += 1
            members = [
                f"{pair['value']!r}: {self.emit(pair['children'][0], value)}"
                for pair in node["children"]
            ]
            self.line(f"{result} = {{{', '.join(members)}}}")
            self.depth -= 1
            return result
        function, result = self.constant(compile_node(node, self.functions)), self.temporary()
        self.line(f"{result} = {function}({value})")
        return result


def compile_node(node: Dict[str, Any], functions: jmespath_functions.Functions) -> Compiled:
    """A function of the current value that evaluates ``node``, as nested closures."""
    compile_kind = _KINDS.get(node["type"])
    if compile_kind is None:
        return _interpreted(node, functions)
    return compile_kind(node, functions)


def _interpreted(node: Dict[str, Any], functions: jmespath_functions.Functions) -> Compiled:
    interpreter = TreeInterpreter(Options(custom_functions=functions))
    return lambda value: interpreter.visit(node, value)


def _children(node: Dict[str, Any], functions: Any) -> List[Compiled]:
    return [compile_node(child, functions) for child in node["children"]]


def _field(node: Dict[str, Any], functions: Any) -> Compiled:
    name = node["value"]

    def field(value: Any) -> Any:
        if type(value) is dict:
            return value.get(name)
        try:
            return value.get(name)
        except AttributeError:
            return None

    return field


def _chain(node: Dict[str, Any], functions: Any) -> Compiled:
    """subexpression, index_expression and pipe: each child applied to the last result."""
    if all(child["type"] == "field" for child in node["children"]):
        names = tuple(child["value"] for child in node["children"])

        def path(value: Any) -> Any:
            for name in names:
                if type(value) is dict:
                    value = value.get(name)
                else:
                    try:
                        value = value.get(name)
                    except AttributeError:
                        return None
            return value

        return path
    steps = _children(node, functions)
    if len(steps) == 2:
        first, second = steps
        return lambda value: second(first(value))

    def chain(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chain


def _current(node: Dict[str, Any], functions: Any) -> Compiled:
    return lambda value: value


def _literal(node: Dict[str, Any], functions: Any) -> Compiled:
    constant = node["value"]
    return lambda value: constant


def _index(node: Dict[str, Any], functions: Any) -> Compiled:
    position = node["value"]

    def index(value: Any) -> Any:
        if not isinstance(value, list):
            return None
        try:
            return value[position]
        except IndexError:
            return None

    return index


def _slice(node: Dict[str, Any], functions: Any) -> Compiled:
    bounds = slice(*node["children"])
    return lambda value: value[bounds] if isinstance(value, list) else None


_ORDER = {
    "lt": lambda x, y: x < y,
    "gt": lambda x, y: x > y,
    "lte": lambda x, y: x <= y,
    "gte": lambda x, y: x >= y,
}


def _comparator(node: Dict[str, Any], functions: Any) -> Compiled:
    left, right = _children(node, functions)
    operator = node["value"]
    if operator == "eq":
        return lambda value: _equals(left(value), right(value))
    if operator == "ne":
        return lambda value: not _equals(left(value), right(value))
    order = _ORDER[operator]

    def compare(value: Any) -> Any:
        x, y = left(value), right(value)
        if not (_is_comparable(x) and _is_comparable(y)):
            return None
        return order(x, y)

    return compare


def _alternatives(node: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``a || b || c`` as [a, b, c]: one loop instead of nested calls."""
    if node["type"] != "or_expression":
        return [node]
    left, right = node["children"]
    return _alternatives(left) + _alternatives(right)


def _or(node: Dict[str, Any], functions: Any) -> Compiled:
    options = [compile_node(option, functions) for option in _alternatives(node)]
    *first, last = options

    def either(value: Any) -> Any:
        for option in first:
            matched = option(value)
            if not is_false(matched):
                return matched
        return last(value)

    return either


def _and(node: Dict[str, Any], functions: Any) -> Compiled:
    left, right = _children(node, functions)

    def both(value: Any) -> Any:
        matched = left(value)
        return matched if is_false(matched) else right(value)

    return both


def _not(node: Dict[str, Any], functions: Any) -> Compiled:
    (operand,) = _children(node, functions)

    def negate(value: Any) -> Any:
        result = operand(value)
        if _is_actual_number(result) and result == 0:
            return False
        return not result

    return negate


def _multi_select_dict(node: Dict[str, Any], functions: Any) -> Compiled:
    pairs = [
        (pair["value"], compile_node(pair["children"][0], functions)) for pair in node["children"]
    ]

    def select(value: Any) -> Any:
        if value is None:
            return None
        return {key: get(value) for key, get in pairs}

    return select


def _multi_select_list(node: Dict[str, Any], functions: Any) -> Compiled:
    items = _children(node, functions)
    return lambda value: None if value is None else [item(value) for item in items]


def _collect(items: Any, each: Compiled) -> List[Any]:
    """``each`` over the items, leaving out what gives null (every projection's rule)."""
    collected = []
    for item in items:
        current = each(item)
        if current is not None:
            collected.append(current)
    return collected


def _projection(node: Dict[str, Any], functions: Any) -> Compiled:
    base, each = _children(node, functions)

    def project(value: Any) -> Any:
        items = base(value)
        return _collect(items, each) if isinstance(items, list) else None

    return project


def _value_projection(node: Dict[str, Any], functions: Any) -> Compiled:
    base, each = _children(node, functions)

    def project(value: Any) -> Any:
        try:
            items = base(value).values()
        except AttributeError:
            return None
        return _collect(items, each)

    return project


def _filter_projection(node: Dict[str, Any], functions: Any) -> Compiled:
    base, each, condition = _children(node, functions)

    def project(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        return _collect([item for item in items if not is_false(condition(item))], each)

    return project


def _flatten(node: Dict[str, Any], functions: Any) -> Compiled:
    (base,) = _children(node, functions)

    def flatten(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        merged = []
        for item in items:
            if isinstance(item, list):
                merged.extend(item)
            else:
                merged.append(item)
        return merged

    return flatten


class _Expression:  # the name jmespath's type checks know as 'expref'
    """What functions such as sort_by() expect of &expression: ``visit(node, value)``."""

    __slots__ = ("expression", "_compiled")

    def __init__(self, node: Dict[str, Any], compiled: Compiled) -> None:
        self.expression = node
        self._compiled = compiled

    def visit(self, node: Dict[str, Any], value: Any) -> Any:
        return self._compiled(value)


def _function(node: Dict[str, Any], functions: Any) -> Compiled:
    name = node["value"]
    arguments: List[Compiled] = []
    for child in node["children"]:
        if child["type"] == "expref":
            reference = _Expression(
                child["children"][0], compile_node(child["children"][0], functions)
            )
            arguments.append(lambda value, reference=reference: reference)
        else:
            arguments.append(compile_node(child, functions))
    spec = functions.FUNCTION_TABLE.get(name)
    signature = spec["signature"] if spec else None
    if (
        signature is not None
        and len(signature) == len(arguments)
        and not any(argument.get("types") or argument.get("variadic") for argument in signature)
    ):
        # Any type is welcome and the count is right: nothing for call_function to check.
        function = spec["function"]
        return lambda value: function(functions, *[argument(value) for argument in arguments])
    call = functions.call_function
    return lambda value: call(name, [argument(value) for argument in arguments])


_KINDS: Dict[str, Callable[[Dict[str, Any], Any], Compiled]] = {
    "field": _field,
    "subexpression": _chain,
    "index_expression": _chain,
    "pipe": _chain,
    "current": _current,
    "identity": _current,
    "literal": _literal,
    "index": _index,
    "slice": _slice,
    "comparator": _comparator,
    "or_expression": _or,
    "and_expression": _and,
    "not_expression": _not,
    "multi_select_dict": _multi_select_dict,
    "multi_select_list": _multi_select_list,
    "projection": _projection,
    "value_projection": _value_projection,
    "filter_projection": _filter_projection,
    "flatten": _flatten,
    "function_expression": _function,
}
