"""The compiled JMESPath is the same language: the official compliance suite, case by case.

The suite (``tests/jmespath_compliance/``, see its SOURCE.md) is run against
``compile_expression_tree``; results must equal the suite's, and cases that must fail at run
time must raise a JMESPath error, as the reference interpreter does.
"""

import json
from pathlib import Path
from typing import Any, List

import jmespath
import pytest
from jmespath import exceptions, functions

from generic_connector.compiler import compile_expression_tree

SUITE = Path(__file__).resolve().parent / "jmespath_compliance"


def cases() -> List[Any]:
    found = []
    for path in sorted(SUITE.glob("*.json")):
        if path.name == "benchmarks.json":
            continue
        for group_index, group in enumerate(json.loads(path.read_text())):
            for case_index, case in enumerate(group["cases"]):
                label = f"{path.stem}-{group_index}-{case_index}"
                found.append(pytest.param(group["given"], case, id=label))
    return found


ALL = cases()


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
