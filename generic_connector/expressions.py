"""JMESPath expressions: parsed and checked once, compiled to Python, evaluated per request.

Knows nothing of HTTP: a failure is an ``EvaluationError`` naming the expression, and the
pipeline decides what the platform is answered.
"""

import re
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.parser import ParsedResult

from generic_connector.compiler import ExpressionError, Tree, compile_expression_tree, is_false
from generic_connector.errors import GenericConnectorError
from generic_connector.functions import (
    AES_KEY_ENCODINGS,
    DEFAULT_SCOPE,
    DIGEST_ENCODINGS,
    FUNCTIONS,
    HMAC_ALGORITHMS,
    JWT_ALGORITHMS,
    REQUEST_FUNCTIONS,
    SIGNATURES,
    TIME_UNITS,
    Scope,
)

LITERALS = {"literal", "raw_string"}
_PATHS = {"subexpression", "index_expression", "filter_projection", "projection"}
_JSON_TYPES = {str: "string", int: "number", float: "number", bool: "boolean", list: "array"}
# The functions that read an environment variable: which argument names it.
_ENV_ARGUMENTS = {"env": 0, "env_or": 0, "jwt_sign": 1}
# Arguments that are literals, one of a few values (by 0-based position), and a call to show.
_CHOICES: Dict[str, Tuple[Dict[int, Tuple[str, ...]], str]] = {
    "hmac": (
        {0: HMAC_ALGORITHMS, 3: DIGEST_ENCODINGS},
        "hmac('sha256', env('KEY'), raw_body(), 'hex')",
    ),
    "now": ({0: TIME_UNITS}, "now('s')"),
    "aes_cbc_decrypt": (
        {3: AES_KEY_ENCODINGS},
        "aes_cbc_decrypt(encrypt, env('KEY'), `null`, 'sha256')",
    ),
}


class EvaluationError(GenericConnectorError):
    """An expression that failed on the data it was given (a type error, a bad argument)."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"`{expression}` failed on this request: {reason}")
        self.expression = expression
        self.reason = reason


class Expression:
    """A JMESPath expression, parsed and compiled to a Python function once."""

    __slots__ = (
        "source",
        "tree",
        "evaluate",
        "env_names",
        "optional_env_names",
        "reads_request",
    )

    def __init__(self, source: str) -> None:
        self.source = source
        tree: Tree = compile_expression(source).parsed
        self.tree = tree
        # The compiled function of (value, scope) itself, for hot paths that handle JMESPath
        # errors themselves; a scope of None is DEFAULT_SCOPE.
        self.evaluate = compile_expression_tree(tree, FUNCTIONS)
        self.env_names = env_names(tree)
        self.optional_env_names = optional_env_names(tree)
        self.reads_request = bool(_function_names(tree) & REQUEST_FUNCTIONS)

    def search(self, data: Any, scope: Optional[Scope] = None) -> Any:
        """Evaluate over ``data``; raise EvaluationError naming the expression if it fails.

        ``scope`` is what header(), query(), body(), env(), env_or() and jwt_sign() read;
        without one, there is no request and the environment is ``os.environ``.
        """
        try:
            return self.evaluate(data, DEFAULT_SCOPE if scope is None else scope)
        except Exception as error:  # JMESPath type errors, and a function failing on data
            raise EvaluationError(self.source, str(error) or type(error).__name__) from None


def compile_expression(source: str) -> ParsedResult:
    """Parse ``source`` and check its function calls; raise ExpressionError saying what is wrong."""
    try:
        parsed = jmespath.compile(source)
    except jmespath_errors.ParseError as error:
        raise syntax_error(error, source) from None
    _check_calls(parsed.parsed)
    return parsed


# The reason of an expression that ends before it is complete (jmespath's own words).
INCOMPLETE = "Incomplete expression"
# jmespath names the token types it expected in its message only: "Expecting: [...], got: dot".
_EXPECTING = re.compile(r"Expecting: (?P<expected>.+), got: \w+$")


def syntax_error(error: jmespath_errors.ParseError, source: str) -> ExpressionError:
    """jmespath's parse error as an ExpressionError with its position and token as fields,
    and the message people have always read: ``<reason> at column <position + 1>``."""
    if isinstance(error, jmespath_errors.IncompleteExpressionError):
        return ExpressionError(
            "the expression ends too early",
            expression=source,
            position=len(source),
            token="",
            token_type="eof",
            reason=INCOMPLETE,
        )
    if isinstance(error, jmespath_errors.LexerError):  # no token type: the lexer found none
        reason, position, value, kind = error.message, error.lexer_position, error.lexer_value, None
    else:
        reason, position, value = error.msg, error.lex_position, error.token_value
        kind = error.token_type.lower()  # ParseError upper-cases it
    expecting = _EXPECTING.match(reason)
    return ExpressionError(
        f"{reason} at column {position + 1}",
        expression=source,
        position=position,
        token=None if value is None else str(value),
        token_type=kind,
        reason=reason,
        expected=tuple(re.findall(r"\w+", expecting["expected"])) if expecting else (),
    )


def _check_calls(tree: Tree) -> None:
    """Unknown functions, wrong argument counts and literal arguments of the wrong type."""
    for node in nodes(tree):
        _check_node(node)


def _check_node(node: Tree) -> None:
    if node["type"] == "slice" and node["children"][2] == 0:
        raise ExpressionError("a slice step cannot be 0")
    if node["type"] in _PATHS and node["children"][0]["type"] == "not_expression":
        # jmespath reads `!a.b` as `(!a).b`: a field of true or false, always null.
        raise ExpressionError(
            "`!` negates only the name right after it, so what follows is looked up in true "
            "or false and gives null: write !(a.b) to negate a path"
        )
    if node["type"] == "function_expression":
        name, args = node["value"], node["children"]
        if name not in SIGNATURES:
            raise ExpressionError(f"unknown function {name}()")
        signature = SIGNATURES[name]
        variadic = bool(signature) and signature[-1].get("variadic")
        if len(args) != len(signature) and not (variadic and len(args) >= len(signature)):
            expected = f"{len(signature)}{' or more' if variadic else ''}"
            noun = "argument" if expected == "1" else "arguments"
            raise ExpressionError(f"{name}() takes {expected} {noun}, got {len(args)}")
        for position, (arg, spec) in enumerate(zip(args, signature), start=1):
            allowed = [t.split("-")[0] for t in spec.get("types", [])]
            if arg["type"] in LITERALS and allowed:
                actual = _JSON_TYPES.get(type(arg["value"]), "object")
                if arg["value"] is None:
                    actual = "null"
                if actual not in allowed:
                    raise ExpressionError(
                        f"{name}() argument {position} must be {' or '.join(allowed)}, got {actual}"
                    )
        # Which environment variable is read is fixed when the mapping is compiled, never
        # chosen by request data.
        if name == "env" and args[0]["type"] not in LITERALS:
            raise ExpressionError("env() takes the variable's name as a literal: env('NAME')")
        if name == "env_or" and args[0]["type"] not in LITERALS:
            raise ExpressionError(
                "env_or() takes the variable's name as a literal: env_or('NAME', 'default')"
            )
        if name == "jwt_sign":
            _check_jwt_sign(args)
        if name == "regex_replace":
            _check_pattern(args[1])
        if name in _CHOICES:
            _check_choices(name, args)


def _check_jwt_sign(args: List[Tree]) -> None:
    usage = "jwt_sign(claims, 'KEY_ENV', 'HS256')"
    if args[1]["type"] not in LITERALS:
        raise ExpressionError(
            f"jwt_sign() takes the key's environment variable as a literal: {usage}"
        )
    if args[2]["type"] not in LITERALS or args[2]["value"] not in JWT_ALGORITHMS:
        raise ExpressionError(
            f"jwt_sign() takes the algorithm as a literal, one of {', '.join(JWT_ALGORITHMS)}: "
            f"{usage}"
        )


def _check_choices(name: str, args: List[Tree]) -> None:
    choices, usage = _CHOICES[name]
    for position, allowed in choices.items():
        if args[position]["type"] not in LITERALS or args[position]["value"] not in allowed:
            raise ExpressionError(
                f"{name}() argument {position + 1} is a literal, one of {', '.join(allowed)}: "
                f"{usage}"
            )


def _check_pattern(node: Tree) -> None:
    if node["type"] not in LITERALS:
        raise ExpressionError("regex_replace() takes its pattern as a literal: 'pattern'")
    try:
        re.compile(node["value"])
    except re.error as error:
        raise ExpressionError(f"regex_replace() pattern is not a valid regex: {error}") from None


def nodes(tree: Tree) -> Iterator[Tree]:
    """Every node of a parsed expression, the root first."""
    yield tree
    for child in tree.get("children", ()):
        if isinstance(child, dict):
            yield from nodes(child)


def _function_names(tree: Tree) -> Set[str]:
    return {node["value"] for node in nodes(tree) if node["type"] == "function_expression"}


def env_names(tree: Tree) -> Set[str]:
    """The environment variables an expression needs: those it reads with env('NAME'), and
    jwt_sign()'s keys. Start-up checks they are set."""
    return _env_arguments(tree, {"env", "jwt_sign"})


def optional_env_names(tree: Tree) -> Set[str]:
    """The environment variables an expression reads with env_or('NAME', 'default'): they
    need not be set."""
    return _env_arguments(tree, {"env_or"})


def _env_arguments(tree: Tree, functions: Set[str]) -> Set[str]:
    return {
        node["children"][_ENV_ARGUMENTS[node["value"]]]["value"]
        for node in nodes(tree)
        if node["type"] == "function_expression" and node["value"] in functions
    }


def json_type(value: Any) -> str:
    """How a decoded JSON/YAML value is named in messages: "a string", "a list", ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):  # YAML's objects are dicts that remember positions
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else type(value).__name__


def optional(source: Optional[str]) -> Optional[Expression]:
    """An Expression, or None for an absent key."""
    return Expression(source) if source else None


def truthy(value: Any) -> bool:
    """JMESPath truth: everything but false, null and empty strings, lists and objects."""
    return not is_false(value)
