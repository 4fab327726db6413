"""The compiled JMESPath is the same language: the official compliance suite, case by case.

The suite (``tests/jmespath_compliance/``, see its SOURCE.md) is run against
``compile_expression_tree``; results must equal the suite's, and cases that must fail at run
time must raise a JMESPath error, as the reference interpreter does. ``compile_mapping``, which
evaluates many expressions in one function and shares what they have in common, must give
each expression's result when all of a group's expressions are compiled together.

Then what the suite does not cover: the scope given to every evaluation (reaching functions
inside projections, filters and &expressions), the parts left to jmespath's interpreter (which
may not call functions that read the scope), expressions nested deeper than Python's blocks,
and the compiler's use of jmespath's public names only.
"""

import ast
import json
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import jmespath
import pytest
from jmespath import exceptions, functions

from generic_connector import compiler
from generic_connector.compiler import (
    Compiled,
    ExpressionError,
    compile_expression_tree,
    compile_mapping,
)
from generic_connector.functions import FUNCTIONS, ConnectorFunctions, Scope
from generic_connector.request import IncomingRequest

SCOPE = Scope()
SUITE = Path(__file__).resolve().parent / "jmespath_compliance"


def suite() -> Iterator[Tuple[str, Any]]:
    """(label, group) for every group of the suite: a document and the cases over it."""
    for path in sorted(SUITE.glob("*.json")):
        if path.name != "benchmarks.json":
            for group_index, group in enumerate(json.loads(path.read_text())):
                yield f"{path.stem}-{group_index}", group


def cases() -> List[Any]:
    return [
        pytest.param(group["given"], case, id=f"{label}-{case_index}")
        for label, group in suite()
        for case_index, case in enumerate(group["cases"])
    ]


ALL = cases()


def groups() -> List[Any]:
    """Each group's document with the expressions that succeed on it, for mapping functions."""
    found = []
    for label, group in suite():
        expressions = []
        for case in group["cases"]:
            try:
                tree = jmespath.compile(case["expression"]).parsed
            except exceptions.ParseError:
                continue
            if "error" not in case:
                expressions.append((tree, case["result"]))
        if expressions:
            found.append(pytest.param(group["given"], expressions, id=label))
    return found


def test_the_suite_is_there() -> None:
    assert len(ALL) > 500


@pytest.mark.parametrize("given, case", ALL)
def test_compliance(given: Any, case: dict) -> None:
    expression = case["expression"]
    if case.get("error") == "syntax":
        try:
            jmespath.compile(expression)
        except exceptions.ParseError:
            return
        pytest.skip("this suite version calls it a syntax error; the jmespath package parses it")
    try:
        tree = jmespath.compile(expression).parsed
    except exceptions.ParseError:
        pytest.skip("the jmespath package's own parser rejects it; nothing to compile")
    evaluate = compile_expression_tree(tree, functions.Functions())
    if "error" in case:
        # ValueError: a zero slice step, as the reference interpreter raises it (mappings
        # refuse such slices when they are compiled).
        with pytest.raises((exceptions.JMESPathError, ValueError)):
            evaluate(given, SCOPE)
    else:
        assert evaluate(given, SCOPE) == case["result"]
        assert evaluate(given, SCOPE) == jmespath.search(expression, given)


@pytest.mark.parametrize("given, expressions", groups())
def test_expressions_compiled_together(given: Any, expressions: List[Any]) -> None:
    trees = [tree for tree, _ in expressions]
    evaluate = compile_mapping([], trees, functions.Functions())
    assert list(evaluate(given, SCOPE)) == [result for _, result in expressions]


def test_mapping_functions_stop_at_the_first_true_rule() -> None:
    rules = [jmespath.compile(source).parsed for source in ("a.skip", "!(a.text)", "missing")]
    fields = [jmespath.compile("a.text").parsed, None]
    evaluate = compile_mapping(rules, fields, functions.Functions())
    assert evaluate({"a": {"skip": True}}, SCOPE) == 0
    assert evaluate({"a": {"text": ""}}, SCOPE) == 1
    assert evaluate({"a": {"text": "hi"}}, SCOPE) == ("hi", None)


# The scope: what header(), query(), body() and env() read, given to every evaluation.

REQUEST = IncomingRequest.from_parts(b"{}", {"X-Order": "price"}, {"n": "2"})


def connector(source: str) -> Compiled:
    """An expression compiled with the connector's functions."""
    return compile_expression_tree(jmespath.compile(source).parsed, FUNCTIONS)


def test_functions_read_the_scope_they_are_given() -> None:
    evaluate = connector("{h: header('x-order'), q: query('n'), b: body().a, e: env('NAME')}")
    scope = Scope(REQUEST, {"a": 1}, {"NAME": "value"})
    assert evaluate({}, scope) == {"h": "price", "q": "2", "b": 1, "e": "value"}
    other = Scope(None, {"a": 2}, {})
    assert evaluate({}, other) == {"h": None, "q": None, "b": 2, "e": None}
    assert evaluate({}, scope)["h"] == "price"  # nothing of the other evaluation stays


def test_no_scope_is_the_default_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GC_TEST_VARIABLE", "set")
    evaluate = connector("[header('x-order'), body(), env('GC_TEST_VARIABLE')]")
    assert evaluate({}, None) == [None, None, "set"]


def test_the_scope_reaches_projections_filters_and_exprefs() -> None:
    items = {"items": [{"price": 3, "name": "c"}, {"price": 1, "name": "a"}]}
    scope = Scope(REQUEST, {"limit": 2}, {})
    cases = {
        "items[*].[name, query('n')]": [["c", "2"], ["a", "2"]],
        "items[?price > body().limit].name": ["c"],
        "sort_by(items, &get(@, header('x-order')))[].name": ["a", "c"],
        "max_by(items, &to_number(join('', [to_string(price), query('n')]))).name": "c",
        "map(&[name, body().limit], items)": [["c", 2], ["a", 2]],
        "*.[length(@), query('n')]": [[2, "2"]],
        "items[].[name][?@ != header('x-order')] | [].join('', [@, query('n')])": ["c2", "a2"],
    }
    for source, expected in cases.items():
        assert connector_with_get(source)(items, scope) == expected, source


class WithGet(ConnectorFunctions):
    """A function for the test above: the value of a key named at run time."""

    @functions.signature({"types": ["object"]}, {"types": ["string"]})
    def _func_get(self, value: dict, key: str) -> Any:
        return value.get(key)


def connector_with_get(source: str) -> Compiled:
    return compile_expression_tree(jmespath.compile(source).parsed, WithGet())


def test_mapping_functions_take_the_scope() -> None:
    rules = [jmespath.compile("header('x-skip') == 'yes'").parsed]
    fields = [jmespath.compile("a.text").parsed, jmespath.compile("query('n')").parsed]
    evaluate = compile_mapping(rules, fields, FUNCTIONS)
    skip = IncomingRequest.from_parts(b"{}", {"X-Skip": "yes"})
    assert evaluate({"a": {"text": "hi"}}, Scope(skip)) == 0
    assert evaluate({"a": {"text": "hi"}}, Scope(REQUEST)) == ("hi", "2")
    assert evaluate({"a": {"text": "hi"}}, None) == ("hi", None)


def test_a_scope_argument_of_the_wrong_type_fails_at_run_time() -> None:
    with pytest.raises(exceptions.JMESPathTypeError, match="header"):
        connector("header(a)")({"a": 1}, SCOPE)
    assert connector("header(a)")({"a": "x-order"}, Scope(REQUEST)) == "price"


# What is not written out as Python: jmespath's interpreter evaluates it.


def test_an_expref_outside_arguments_is_left_to_the_interpreter() -> None:
    source = "sort_by(@, a || &b)"  # `a` is null on a list: the expref is the argument
    given = [{"b": 2}, {"b": 1}]
    assert connector(source)(given, SCOPE) == jmespath.search(source, given) == [{"b": 1}, {"b": 2}]


@pytest.mark.parametrize(
    "source",
    ["sort_by(@, a || &header('x'))", "[&body()]", "{a: &length(env('NAME'))}"],
)
def test_the_interpreter_is_not_given_functions_that_read_the_scope(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"cannot be called in an &expression"):
        connector(source)


def test_a_node_kind_the_compiler_does_not_know_is_left_to_the_interpreter() -> None:
    call = jmespath.compile("header('x')").parsed
    with pytest.raises(ExpressionError, match=r"header\(\) cannot be called in a future_kind"):
        compile_expression_tree({"type": "future_kind", "children": [call]}, FUNCTIONS)
    field = jmespath.compile("a").parsed
    evaluate = compile_expression_tree({"type": "future_kind", "children": [field]}, FUNCTIONS)
    with pytest.raises(NotImplementedError, match="future_kind"):  # the interpreter's answer
        evaluate({}, SCOPE)


# Generated source: nesting deeper than Python's blocks allow, and what it imports.


@pytest.mark.parametrize(
    "source",
    [
        ".".join(["a[*]"] * 30),
        ".".join(["a[?b]"] * 30),
        "(" * 40 + "x" + " || y)" * 40,
        "{a: " * 40 + "a" + "}" * 40,
        "[" * 40 + "a" + "]" * 40,
        "map(&" * 10 + "y" + ", a)" * 10,
    ],
)
def test_deeply_nested_expressions_compile(source: str) -> None:
    given: Any = {"b": True, "y": 1, "a": None}
    for _ in range(30):
        given = {"a": [given], "b": True, "y": 1}
    assert compile_expression_tree(jmespath.compile(source).parsed, functions.Functions())(
        given, SCOPE
    ) == jmespath.search(source, given)


def test_the_compiler_uses_only_public_jmespath_names() -> None:
    tree = ast.parse(Path(compiler.__file__).read_text())
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jmespath")
        for alias in node.names
    ]
    assert imported and not [name for _, name in imported if name.startswith("_")]
