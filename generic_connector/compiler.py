"""JMESPath expressions turned into plain Python functions, once, at start-up.

``jmespath`` interprets a parsed expression by walking its tree on every search; for the small
expressions mappings use, that walk costs more than the work. Here the tree is written out as
Python source, one statement per node into temporaries, and ``exec`` makes it a function of
the current value and the ``Scope`` (what header(), env() and the like read): projections
and flattening become loops, an ``&expression`` given to a function becomes a function of its
own. The semantics are the interpreter's, checked against the official JMESPath compliance
suite in ``tests/test_compiler.py``.

What is not written out (an ``&expression`` anywhere but in a function's arguments, and any
node kind a later jmespath adds) is evaluated by jmespath's ``TreeInterpreter``, through its
public API. The interpreter cannot give a function the scope, so such a part may not call
one that reads it: that is refused when the expression is compiled.
"""

import json
from numbers import Number
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from jmespath import exceptions as jmespath_errors
from jmespath import functions as jmespath_functions
from jmespath.visitor import Options, TreeInterpreter

from generic_connector.errors import GenericConnectorError
from generic_connector.functions import DEFAULT_SCOPE, Scope, gives_another_value, takes_scope

# A node of a parsed expression as jmespath builds it ({"type", "value", "children"}), read only.
Tree = Mapping[str, Any]
# A compiled expression: a function of the current value and the scope (None: DEFAULT_SCOPE).
Compiled = Callable[[Any, Optional[Scope]], Any]


class ExpressionError(GenericConnectorError, ValueError):
    """An expression that does not compile or calls a function wrongly.

    A syntax error jmespath found carries its parts as fields, so that nothing reads them back
    from the message: ``expression`` (the source), ``position`` (the 0-based offset of the
    offending token in it; messages name the column ``position + 1``, ``column``), ``token``
    (that token's text as jmespath's message shows it, '' at the end), ``token_type``
    (jmespath's name for it: 'dot', 'eof', ...), ``reason`` (jmespath's words without the
    position) and ``expected`` (the token types jmespath wanted there, when it says). An
    expression that parses but is refused (an unknown function, a wrong argument) has the
    message only: ``syntax`` is false and the fields are None.
    """

    def __init__(
        self,
        message: str,
        *,
        expression: Optional[str] = None,
        position: Optional[int] = None,
        token: Optional[str] = None,
        token_type: Optional[str] = None,
        reason: Optional[str] = None,
        expected: Tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.expression = expression
        self.position = position
        self.token = token
        self.token_type = token_type
        self.reason = reason
        self.expected = expected

    @property
    def syntax(self) -> bool:
        """Whether jmespath could not parse the expression (the fields are known)."""
        return self.reason is not None

    @property
    def column(self) -> Optional[int]:
        """The 1-based column messages name, or None."""
        return None if self.position is None else self.position + 1


def is_false(value: Any) -> bool:
    """JMESPath falsiness: false, null, empty strings, lists and objects (not 0).

    Of JSON's values those are the ones Python finds false, bar the numbers 0 and 0.0.
    """
    return not value and type(value) is not int and type(value) is not float


def compile_expression_tree(node: Tree, functions: jmespath_functions.Functions) -> Compiled:
    """One Python function of ``(value, scope)`` for a whole parsed expression.

    Raise ExpressionError if a part left to jmespath's interpreter calls a function that
    reads the scope.
    """
    source = _Source(functions)
    source.line(f"return {source.emit(node, 'value')}")
    return source.function()


def compile_mapping(
    rules: Sequence[Tree],
    fields: Sequence[Optional[Tree]],
    functions: jmespath_functions.Functions,
) -> Compiled:
    """One Python function of ``(event, scope)`` for all of a mapping's expressions.

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


# The interpreter's comparisons, which jmespath.visitor keeps private.


def _is_number(value: Any) -> bool:
    """A number, and not a boolean (Python's True is the integer 1)."""
    return isinstance(value, Number) and not isinstance(value, bool)


def _equals(x: Any, y: Any) -> bool:
    """``==``, except that 0 and 1 are not equal to false and true."""
    if type(x) is str or type(y) is str:
        return x == y
    if _is_number(x) and x in (0, 1):
        if isinstance(y, bool):
            return False
    elif _is_number(y) and y in (0, 1) and isinstance(x, bool):
        return False
    return x == y


def _is_comparable(value: Any) -> bool:
    """What ``<``, ``<=``, ``>`` and ``>=`` compare: numbers and strings (else null)."""
    kind = type(value)
    if kind is int or kind is float or kind is str:
        return True
    return isinstance(value, str) or _is_number(value)


# jmespath's type names, and the names of the Python types each stands for (as
# jmespath.functions checks arguments: by type name).
_TYPE_NAMES: Dict[str, Tuple[str, ...]] = {
    "boolean": ("bool",),
    "array": ("list", "_Projection"),
    "object": ("dict", "OrderedDict"),
    "null": ("NoneType",),
    "string": ("str",),
    "number": ("float", "int"),
    "expref": ("_Expression",),
}


def _type_of(value: Any) -> str:
    name = type(value).__name__
    return next((kind for kind, names in _TYPE_NAMES.items() if name in names), "unknown")


def _allowed(value: Any, types: Sequence[str]) -> Optional[bool]:
    """Whether ``value`` is of one of ``types``; None when only an array-of type could say."""
    name = type(value).__name__
    if any(name in _TYPE_NAMES.get(kind, ()) for kind in types if "-" not in kind):
        return True
    return None if any("-" in kind for kind in types) else False


def _wrong_type(function: str, value: Any, types: List[str]) -> None:
    raise jmespath_errors.JMESPathTypeError(function, value, _type_of(value), types)


def _get(value: Any, name: str) -> Any:
    try:
        return value.get(name)
    except AttributeError:
        return None


def _values(value: Any) -> Any:
    try:
        return value.values()
    except AttributeError:
        return None


def _falsy(name: str) -> str:
    # As is_false: a true value is told at the first test, with nothing built to compare with.
    return f"(not {name} and type({name}) is not int and type({name}) is not float)"


class _Expression:  # the name jmespath's type checks know as 'expref'
    """What functions such as sort_by() are given for ``&expression``: ``visit(node, value)``
    evaluates it, over the scope of the evaluation that built it."""

    __slots__ = ("expression", "_function", "_scope")

    def __init__(self, node: Tree, function: Compiled, scope: Optional[Scope]) -> None:
        self.expression = node
        self._function = function
        self._scope = scope

    def visit(self, node: Tree, value: Any) -> Any:
        return self._function(value, self._scope)


_COMPARISONS = {"lt": "<", "gt": ">", "lte": "<=", "gte": ">="}
# Nodes whose source opens no block: never worth a function of their own.
_FLAT = {"field", "current", "identity", "literal", "index", "slice"}
# Past this indentation, a node becomes a function of its own: Python limits how deep
# blocks nest (20 loops), and expressions can nest deeper.
_MAX_DEPTH = 8


class _Root:
    """What the functions of one compilation share: constants, counter, definitions."""

    def __init__(self, functions: jmespath_functions.Functions) -> None:
        self.functions = functions
        self.constants: Dict[str, Any] = {
            "_get": _get,
            "_values": _values,
            "_equals": _equals,
            "_is_comparable": _is_comparable,
            "_wrong_type": _wrong_type,
            "_Expression": _Expression,
            "_default_scope": DEFAULT_SCOPE,
        }
        self.count = 0
        # Module-level statements before the main function: nested functions, exprefs.
        self.definitions: List[str] = []
        self.interpreter: Optional[str] = None


class _Source:
    """Python source for one function over an expression tree: one statement per node."""

    def __init__(self, functions: jmespath_functions.Functions, root: Optional[_Root] = None):
        self.functions = functions
        self.root = root or _Root(functions)
        self.lines: List[str] = []
        self.depth = 1
        # (node, input) -> the name holding its value, for values computed unconditionally.
        self.computed: Dict[Tuple[str, str], str] = {}
        self.reads_scope = False

    def temporary(self, prefix: str = "t") -> str:
        self.root.count += 1
        return f"{prefix}{self.root.count}"

    def constant(self, value: Any) -> str:
        name = f"c{len(self.root.constants)}"
        self.root.constants[name] = value
        return name

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def definition(self, name: str) -> str:
        """This function's source, as ``def name(value, scope)``."""
        prologue = ["    if scope is None:", "        scope = _default_scope"]
        body = (prologue if self.reads_scope else []) + self.lines
        return f"def {name}(value, scope):\n" + "\n".join(body)

    def function(self) -> Compiled:
        """The main function, with the functions and constants it uses."""
        source = "\n\n".join(self.root.definitions + [self.definition("evaluate")])
        namespace = dict(self.root.constants)
        exec(source, namespace)  # noqa: S102 - source built from parsed expressions
        return namespace["evaluate"]

    def emit(self, node: Tree, value: str) -> str:
        """Statements that evaluate ``node`` over the variable ``value``; the result's name.

        Expressions are pure, so a node already computed over the same input at the top
        level (not inside a branch) is not computed again; but for one that calls a function
        giving another value at each call (uuid4()), which is.
        """
        key = (json.dumps(node, sort_keys=True, default=repr), value)
        if key in self.computed:
            return self.computed[key]
        unconditional = self.depth == 1
        if self.depth > _MAX_DEPTH and node["type"] not in _FLAT:
            function, reads_scope = self.nested(node)
            self.reads_scope = self.reads_scope or reads_scope
            result = self.temporary()
            self.line(f"{result} = {function}({value}, scope)")
        else:
            result = self._emit(node, value)
        if unconditional and not self._varies(node):
            self.computed[key] = result
        return result

    def _varies(self, node: Tree) -> bool:
        """Whether ``node`` calls a function that gives another value at each call."""
        table = self.functions.FUNCTION_TABLE
        return any(
            inner["type"] == "function_expression"
            and inner["value"] in table
            and gives_another_value(table[inner["value"]]["function"])
            for inner in _nodes(node)
        )

    def nested(self, node: Tree) -> Tuple[str, bool]:
        """A module-level function of ``(value, scope)`` for ``node``: its name, and whether
        it reads the scope."""
        source = _Source(self.functions, self.root)
        source.line(f"return {source.emit(node, 'value')}")
        name = self.temporary("f")
        self.root.definitions.append(source.definition(name))
        return name, source.reads_scope

    def _emit(self, node: Tree, value: str) -> str:
        """One node's statements, by the emitter of its kind (``_EMITTERS``); kinds without
        one are evaluated by jmespath's own interpreter."""
        emitter = _EMITTERS.get(node["type"], _Source._interpreted)
        return emitter(self, node, value)

    def _field(self, node: Tree, value: str) -> str:
        name, result = repr(node["value"]), self.temporary()
        # Absent parents (None) are common and cheap to rule out; other types are rare.
        self.line(
            f"{result} = {value}.get({name}) if type({value}) is dict "
            f"else None if {value} is None else _get({value}, {name})"
        )
        return result

    def _chain(self, node: Tree, value: str) -> str:
        """``a.b``, ``a[0]``, ``a | b``: each child over the result of the one before."""
        for child in node["children"]:
            value = self.emit(child, value)
        return value

    def _current(self, node: Tree, value: str) -> str:
        return value

    def _literal(self, node: Tree, value: str) -> str:
        return self.constant(node["value"])

    def _logical(self, node: Tree, value: str) -> str:
        """``a || b`` and ``a && b``: the right side only when the left one does not decide."""
        left, right = node["children"]
        result = self.temporary()
        self.line(f"{result} = {self.emit(left, value)}")
        test = _falsy(result) if node["type"] == "or_expression" else f"not {_falsy(result)}"
        self.line(f"if {test}:")
        self.depth += 1
        self.line(f"{result} = {self.emit(right, value)}")
        self.depth -= 1
        return result

    def _not(self, node: Tree, value: str) -> str:
        operand, result = self.emit(node["children"][0], value), self.temporary()
        number = f"(type({operand}) is int or type({operand}) is float)"
        self.line(f"{result} = False if {number} and {operand} == 0 else not {operand}")
        return result

    def _comparator(self, node: Tree, value: str) -> str:
        left = self.emit(node["children"][0], value)
        right = self.emit(node["children"][1], value)
        result, operator = self.temporary(), node["value"]
        if operator in ("eq", "ne"):
            negate = "not " if operator == "ne" else ""
            self.line(f"{result} = {negate}_equals({left}, {right})")
            return result
        # A literal's type is known now: only the other side is checked per call.
        operands = list(zip(node["children"], (left, right)))
        if any(
            child["type"] == "literal" and not _is_comparable(child["value"])
            for child, _ in operands
        ):
            self.line(f"{result} = None")
            return result
        checks = [
            f"_is_comparable({name})" for child, name in operands if child["type"] != "literal"
        ]
        test = " and ".join(checks) or "True"
        self.line(f"{result} = {left} {_COMPARISONS[operator]} {right} if {test} else None")
        return result

    def _multi_select(self, node: Tree, value: str) -> str:
        """``{a: x, b: y}`` and ``[x, y]``: null over null."""
        result = self.temporary()
        self.line(f"if {value} is None:")
        self.line(f"    {result} = None")
        self.line("else:")
        self.depth += 1
        if node["type"] == "multi_select_dict":
            members = [
                f"{pair['value']!r}: {self.emit(pair['children'][0], value)}"
                for pair in node["children"]
            ]
            self.line(f"{result} = {{{', '.join(members)}}}")
        else:
            items = [self.emit(child, value) for child in node["children"]]
            self.line(f"{result} = [{', '.join(items)}]")
        self.depth -= 1
        return result

    def _index(self, node: Tree, value: str) -> str:
        position, result = node["value"], self.temporary()
        # Within bounds, rather than catching IndexError.
        inside = f"len({value}) > {position}" if position >= 0 else f"len({value}) >= {-position}"
        self.line(
            f"{result} = {value}[{position}] if isinstance({value}, list) and {inside} else None"
        )
        return result

    def _slice(self, node: Tree, value: str) -> str:
        bounds, result = self.constant(slice(*node["children"])), self.temporary()
        # A step of 0 raises ValueError, as in the interpreter.
        self.line(f"{result} = {value}[{bounds}] if isinstance({value}, list) else None")
        return result

    def _flatten(self, node: Tree, value: str) -> str:
        base = self.emit(node["children"][0], value)
        result, item = self._names(2)
        self.line(f"if isinstance({base}, list):")
        self.line(f"    {result} = []")
        self.line(f"    for {item} in {base}:")
        self.line(f"        if isinstance({item}, list):")
        self.line(f"            {result}.extend({item})")
        self.line("        else:")
        self.line(f"            {result}.append({item})")
        self.line("else:")
        self.line(f"    {result} = None")
        return result

    def _names(self, count: int) -> List[str]:
        return [self.temporary() for _ in range(count)]

    def _projection(self, node: Tree, value: str) -> str:
        """Each item of the base (a list, or an object's values) through the right-hand side,
        leaving out what gives null; a filter first keeps the items its condition is true of."""
        kind = node["type"]
        base, each = self.emit(node["children"][0], value), node["children"][1]
        result, item = self._names(2)
        if kind == "value_projection":
            items = self.temporary()
            self.line(f"{items} = {base}.values() if type({base}) is dict else _values({base})")
            self.line(f"if {items} is not None:")
        else:
            items = base
            if kind == "projection" and each["type"] in ("identity", "current"):
                self.line(
                    f"{result} = [{item} for {item} in {items} if {item} is not None] "
                    f"if isinstance({items}, list) else None"
                )
                return result
            self.line(f"if isinstance({items}, list):")
        self.depth += 1
        self.line(f"{result} = []")
        self.line(f"for {item} in {items}:")
        self.depth += 1
        if kind == "filter_projection":
            self.line(f"if {_falsy(self.emit(node['children'][2], item))}:")
            self.line("    continue")
        current = self.emit(each, item)
        self.line(f"if {current} is not None:")
        self.line(f"    {result}.append({current})")
        self.depth -= 2
        self.line("else:")
        self.line(f"    {result} = None")
        return result

    def _expref(self, node: Tree) -> str:
        """``&node`` as a function's argument: an _Expression evaluating a nested function."""
        expression = self.constant(node)
        function, reads_scope = self.nested(node)
        if reads_scope:  # bound to each evaluation's scope
            self.reads_scope = True
            result = self.temporary()
            self.line(f"{result} = _Expression({expression}, {function}, scope)")
            return result
        result = self.constant(None)  # the same every time: built once
        self.root.definitions.append(f"{result} = _Expression({expression}, {function}, None)")
        return result

    def _call(self, node: Tree, value: str) -> str:
        name, children = node["value"], node["children"]
        arguments = [
            self._expref(child["children"][0])
            if child["type"] == "expref"
            else self.emit(child, value)
            for child in children
        ]
        spec = self.functions.FUNCTION_TABLE.get(name)
        result = self.temporary()
        if spec is not None and takes_scope(spec["function"]):
            self._check_arguments(name, spec["signature"], children, arguments)
            self.reads_scope = True
            function, functions = self.constant(spec["function"]), self.constant(self.functions)
            listed = "".join(f", {argument}" for argument in arguments)
            self.line(f"{result} = {function}({functions}, scope{listed})")
        elif spec is not None and _checked(spec["signature"], children):
            # Nothing for call_function to check: the count is right, and the types.
            function, functions = self.constant(spec["function"]), self.constant(self.functions)
            listed = "".join(f", {argument}" for argument in arguments)
            self.line(f"{result} = {function}({functions}{listed})")
        else:
            call = self.constant(self.functions.call_function)
            self.line(f"{result} = {call}({name!r}, [{', '.join(arguments)}])")
        return result

    def _check_arguments(
        self,
        name: str,
        signature: Sequence[Dict[str, Any]],
        children: List[Tree],
        arguments: List[str],
    ) -> None:
        """For a function given the scope, what call_function would check: the count of
        arguments now, the type of each then (of literals now)."""
        if len(children) != len(signature) or any(spec.get("variadic") for spec in signature):
            raise ExpressionError(f"{name}() takes {len(signature)} arguments, got {len(children)}")
        for position, (spec, child, argument) in enumerate(
            zip(signature, children, arguments), start=1
        ):
            types = list(spec.get("types") or ())
            if not types:
                continue
            if any("-" in kind for kind in types):
                raise TypeError(f"{name}(): typed arrays are not checked for scope functions")
            if child["type"] in ("literal", "expref"):
                if child["type"] == "literal":
                    allowed, actual = _allowed(child["value"], types), _type_of(child["value"])
                else:
                    allowed, actual = "expref" in types, "expref"
                if not allowed:
                    raise ExpressionError(
                        f"{name}() argument {position} must be {' or '.join(types)}, got {actual}"
                    )
                continue
            names = self.constant(frozenset(n for kind in types for n in _TYPE_NAMES[kind]))
            self.line(f"if type({argument}).__name__ not in {names}:")
            self.line(f"    _wrong_type({name!r}, {argument}, {self.constant(types)})")

    def _interpreted(self, node: Tree, value: str) -> str:
        """What is not written out: jmespath's interpreter evaluates it."""
        for inner in _nodes(node):
            if inner["type"] == "function_expression":
                spec = self.functions.FUNCTION_TABLE.get(inner["value"])
                if spec is not None and takes_scope(spec["function"]):
                    where = (
                        "an &expression that is not a function's argument"
                        if node["type"] == "expref"
                        else f"a {node['type']} node"
                    )
                    raise ExpressionError(
                        f"{inner['value']}() cannot be called in {where}: jmespath's "
                        "interpreter evaluates it, and cannot give it the request or the "
                        "environment"
                    )
        if self.root.interpreter is None:
            options = Options(custom_functions=self.functions)
            self.root.interpreter = self.constant(TreeInterpreter(options).visit)
        result = self.temporary()
        self.line(f"{result} = {self.root.interpreter}({self.constant(node)}, {value})")
        return result


# The emitter of each node kind jmespath's parser makes; others go to the interpreter.
_EMITTERS: Dict[str, Callable[[_Source, Tree, str], str]] = {
    "field": _Source._field,
    "subexpression": _Source._chain,
    "index_expression": _Source._chain,
    "pipe": _Source._chain,
    "current": _Source._current,
    "identity": _Source._current,
    "literal": _Source._literal,
    "or_expression": _Source._logical,
    "and_expression": _Source._logical,
    "not_expression": _Source._not,
    "comparator": _Source._comparator,
    "multi_select_dict": _Source._multi_select,
    "multi_select_list": _Source._multi_select,
    "index": _Source._index,
    "slice": _Source._slice,
    "projection": _Source._projection,
    "filter_projection": _Source._projection,
    "value_projection": _Source._projection,
    "flatten": _Source._flatten,
    "function_expression": _Source._call,
}


def _checked(signature: Sequence[Dict[str, Any]], children: List[Tree]) -> bool:
    """Whether call_function's checks are sure to pass: the count of arguments is right and
    each that has types is a literal of one of them, or an &expression where one is wanted."""
    if len(signature) != len(children) or any(spec.get("variadic") for spec in signature):
        return False
    for spec, child in zip(signature, children):
        types = spec.get("types")
        if not types:
            continue
        if child["type"] == "expref":
            if "expref" not in types:
                return False
        elif child["type"] != "literal" or _allowed(child["value"], types) is not True:
            return False
    return True


def _nodes(tree: Tree) -> Iterator[Tree]:
    yield tree
    for child in tree.get("children", ()):
        if isinstance(child, dict):
            yield from _nodes(child)
