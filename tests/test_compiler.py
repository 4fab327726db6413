"""The compiled JMESPath is the same language: the official compliance suite, case by case.

The suite (``tests/jmespath_compliance/``, see its SOURCE.md) is run against
``compile_expression_tree``; results must equal the suite's, and cases that must fail at run
time must raise a JMESPath error, as the reference interpreter does. ``compile_mapping``, which
evaluates many expressions in one function and shares what they have in common, must give
each expression's result when all of a group's expressions are compiled together.
"""

import json
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import jmespath
import pytest
from jmespath import exceptions, functions

from generic_connector.compiler import compile_expression_tree, compile_mapping

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
            evaluate(given)
    else:
        assert evaluate(given) == case["result"]
        assert evaluate(given) == jmespath.search(expression, given)


@pytest.mark.parametrize("given, expressions", groups())
def test_expressions_compiled_together(given: Any, expressions: List[Any]) -> None:
    trees = [tree for tree, _ in expressions]
    evaluate = compile_mapping([], trees, functions.Functions())
    assert list(evaluate(given)) == [result for _, result in expressions]


def test_mapping_functions_stop_at_the_first_true_rule() -> None:
    rules = [jmespath.compile(source).parsed for source in ("a.skip", "!(a.text)", "missing")]
    fields = [jmespath.compile("a.text").parsed, None]
    evaluate = compile_mapping(rules, fields, functions.Functions())
    assert evaluate({"a": {"skip": True}}) == 0
    assert evaluate({"a": {"text": ""}}) == 1
    assert evaluate({"a": {"text": "hi"}}) == ("hi", None)
