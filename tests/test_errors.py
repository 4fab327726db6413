"""Every exception the package raises derives from one base, ``GenericConnectorError``; every
finding has a documented code."""

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Set, get_args

import generic_connector
from generic_connector.errors import FINDING_CODES, FindingCode, GenericConnectorError


def test_every_exception_of_the_package_derives_from_the_one_base() -> None:
    found = {}
    for module_info in pkgutil.walk_packages(generic_connector.__path__, "generic_connector."):
        if module_info.name.endswith("__main__"):
            continue  # running it is the command line
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    assert len(found) >= 20  # the walk found the package's exceptions
    strays = sorted(
        name for name, cls in found.items() if not issubclass(cls, GenericConnectorError)
    )
    assert strays == []


def test_every_finding_code_is_documented_in_one_line() -> None:
    assert list(get_args(FindingCode)) == list(FINDING_CODES)
    for code, meaning in FINDING_CODES.items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", code), code
        assert meaning.strip() and "\n" not in meaning, code


def test_the_package_writes_the_documented_codes_only() -> None:
    """Every code a Finding or a Problem is made with is one of FINDING_CODES (mypy holds the
    package to FindingCode too), and every documented code is written somewhere."""
    package = Path(generic_connector.__file__).parent
    written: Set[str] = set()
    source = ""
    for path in sorted(package.rglob("*.py")):
        if path.name == "errors.py" and path.parent == package:
            continue  # where they are documented
        text = path.read_text(encoding="utf-8")
        source += text
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("Finding", "Problem", "add")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                written.add(node.args[0].value)
    assert len(written) >= 20  # the walk found them
    assert written - set(FINDING_CODES) == set()
    assert [code for code in FINDING_CODES if f'"{code}"' not in source] == []
